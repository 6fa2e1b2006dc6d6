"""Embedder with the built-in "classic" model (named explicitly: the default is the CNN):
API, input types, order, quality."""

import io

import numpy as np
import pytest
from PIL import Image

import fastretrieve
from embed_fixtures import TRANSFORMS, near_duplicate_recall, photo
from fastretrieve.embed import EmbedError, EmbedResult
from fastretrieve.embed.decode import load_rgb
from fastretrieve.embed.download import CLASSIC_MODEL_PATH


@pytest.fixture(scope="module")
def embedder():
    return fastretrieve.Embedder("classic")


@pytest.fixture(scope="module")
def astronaut():
    return photo("astronaut")


def test_classic_embeddings_are_unit_float32_rows(embedder, astronaut):
    vectors = embedder.embed([astronaut, photo("coffee")])
    assert vectors.shape == (2, embedder.dim) == (2, 576)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.provider == "CPUExecutionProvider"


def test_every_input_type_gives_the_same_vector(embedder, astronaut, tmp_path):
    path = tmp_path / "astronaut.png"
    astronaut.save(path)
    as_array = np.asarray(astronaut)
    vectors = embedder.embed([path, str(path), path.read_bytes(), astronaut, as_array])
    np.testing.assert_allclose(vectors, np.repeat(vectors[:1], 5, axis=0), atol=1e-6)
    np.testing.assert_allclose(embedder.embed(as_array), vectors[:1], atol=1e-6)
    np.testing.assert_allclose(embedder.embed(as_array[None]), vectors[:1], atol=1e-6)


def test_order_is_kept_across_batches_and_threads(astronaut):
    images = [np.asarray(astronaut.rotate(angle)) for angle in range(0, 360, 36)]
    one_by_one = np.concatenate([fastretrieve.Embedder("classic", batch_size=1, threads=1).embed([im]) for im in images])
    batched = fastretrieve.Embedder("classic", batch_size=3, threads=2, decode_threads=2).embed(images)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert len({row.tobytes() for row in batched}) == len(images)


def test_embed_names_every_failure(embedder, astronaut):
    with pytest.raises(EmbedError) as caught:
        embedder.embed([astronaut, b"not an image", astronaut, np.zeros((4, 4), np.float64)])
    message = str(caught.value)
    assert "2 of 4 images" in message and "#1" in message and "#3" in message and "uint8" in message
    assert [position for position, _, _ in caught.value.failures] == [1, 3]


def test_empty_input_gives_an_empty_matrix(embedder):
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_embed_paths_streams_lazily_and_in_order(embedder, astronaut, tmp_path):
    good = tmp_path / "good.jpg"
    astronaut.save(good)
    consumed = []

    def paths():
        for index in range(200):
            consumed.append(index)
            yield good if index % 7 else tmp_path / "missing.jpg"

    stream = embedder.embed_paths(paths())
    first = next(stream)
    assert isinstance(first, EmbedResult) and not first.ok and first.error == "file not found"
    # Only a bounded window (2 batches plus the decode threads) was read ahead.
    assert len(consumed) <= 2 * embedder.batch_size + embedder.decode_threads + 1
    rest = list(stream)
    assert len(rest) == 199
    assert [r.ok for r in rest] == [bool(i % 7) for i in range(1, 200)]
    np.testing.assert_allclose(rest[0].vector, embedder.embed([good])[0], atol=1e-6)


def test_fingerprint_describes_model_and_preprocessing(embedder):
    assert embedder.settings["dim"] == 576
    assert embedder.settings["preprocessing"]["image_size"] == [128, 128]
    assert len(embedder.settings["model_sha256"]) == 64
    assert fastretrieve.Embedder("classic", batch_size=4).fingerprint == embedder.fingerprint
    assert fastretrieve.Embedder("classic", interpolation="bicubic").fingerprint != embedder.fingerprint


def test_classic_model_file_matches_its_generator():
    onnx = pytest.importorskip("onnx")
    from fastretrieve.embed.classic import build_classic_model

    committed = onnx.load(str(CLASSIC_MODEL_PATH))
    rebuilt = build_classic_model()
    assert rebuilt.graph.SerializeToString(deterministic=True) == committed.graph.SerializeToString(deterministic=True)
    assert list(rebuilt.opset_import) == list(committed.opset_import)
    assert CLASSIC_MODEL_PATH.stat().st_size < 100_000


def test_classic_near_duplicate_recall_floor(embedder):
    recall, originals, distractors = near_duplicate_recall(embedder)
    assert set(recall) == set(TRANSFORMS)
    assert originals >= 15 and distractors >= 70
    # Measured: 1.00 for every transform, grayscale included, since the whole picture is
    # embedded (0.87 for grayscale when only the centre square was).
    assert min(recall.values()) >= 0.9, recall


def test_jpeg_draft_mode_decodes_small_and_matches_full_decode(embedder):
    big = photo("astronaut").resize((2048, 2048), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=92)
    jpeg = buffer.getvalue()
    # 2048 / 8 = 256 still covers the 128-pixel input, so the decoder skips 63/64 of the work.
    assert load_rgb(jpeg, max_pixels=10**8, draft_size=(128, 128)).size == (256, 256)
    drafted = embedder.embed([jpeg])
    full = embedder.embed([Image.open(io.BytesIO(jpeg)).convert("RGB")])
    assert (drafted @ full.T)[0, 0] > 0.99
