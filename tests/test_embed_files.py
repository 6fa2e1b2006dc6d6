"""Real-world files: each is embedded correctly or skipped with a reason, in order."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import fastretrieve
from embed_fixtures import photo


@pytest.fixture(scope="module")
def embedder():
    return fastretrieve.Embedder(batch_size=4)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _cosine(a, b) -> float:
    return float(np.dot(a, b))


@pytest.fixture(scope="module")
def real_world_folder(tmp_path_factory):
    """Every awkward file of the list, written by the test, with what should happen to it."""
    folder = tmp_path_factory.mktemp("real_world")
    astronaut = photo("astronaut").resize((256, 256))
    coffee = photo("coffee").resize((240, 160))
    expected = {}  # name -> None (embedded) or a fragment of the reason

    def add(name, content, outcome):
        (folder / name).write_bytes(content)
        expected[name] = outcome

    add("upright.jpg", _jpeg_bytes(astronaut), None)
    add("zero_bytes.jpg", b"", "empty file")
    full = _jpeg_bytes(coffee)
    add("truncated.jpg", full[: len(full) // 2], "truncated")
    add("random_bytes.jpg", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not an image")

    buffer = io.BytesIO()
    with_alpha = astronaut.convert("RGBA")
    with_alpha.putalpha(Image.linear_gradient("L").resize(astronaut.size))
    with_alpha.save(buffer, "PNG")
    add("alpha.png", buffer.getvalue(), None)

    buffer = io.BytesIO()
    coffee.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buffer, "GIF")
    add("palette.gif", buffer.getvalue(), None)

    buffer = io.BytesIO()
    red, blue = Image.new("RGB", (64, 64), (220, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 220))
    red.save(buffer, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    add("animated.gif", buffer.getvalue(), None)

    buffer = io.BytesIO()
    gray16 = (np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(buffer, "PNG")
    add("gray16.png", buffer.getvalue(), None)

    add("cmyk.jpg", _jpeg_bytes(coffee.convert("CMYK")), None)
    add("gray.jpg", _jpeg_bytes(coffee.convert("L")), None)

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    add("exif_rotated.jpg", _jpeg_bytes(astronaut.transpose(Image.Transpose.ROTATE_90), exif=exif), None)

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (10, 200, 30)).save(buffer, "PNG")
    add("one_pixel.png", buffer.getvalue(), None)
    add("bomb.png", _png_claiming(40_000, 40_000), "decompression bomb")

    (folder / "directory.jpg").mkdir()
    expected["directory.jpg"] = "is a directory"
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    expected["loop_a.jpg"] = "symlink loop"
    os.mkfifo(folder / "fifo.jpg")  # opening it would block until a writer came: never opened
    expected["fifo.jpg"] = "not a regular file"
    add("last.jpg", _jpeg_bytes(coffee), None)
    return folder, expected, {"astronaut": astronaut, "coffee": coffee, "red": red}


def test_every_awkward_file_is_embedded_or_skipped_with_its_reason(embedder, real_world_folder):
    folder, expected, _ = real_world_folder
    names = list(expected)
    results = list(embedder.embed_paths(folder / name for name in names))
    assert [r.source for r in results] == [folder / name for name in names]
    for name, result in zip(names, results):
        if expected[name] is None:
            assert result.ok, f"{name}: {result.error}"
            assert result.vector.shape == (embedder.dim,) and np.isfinite(result.vector).all()
        else:
            assert not result.ok and result.vector is None, name
            assert expected[name] in result.error, f"{name}: {result.error!r}"


def test_decoded_files_look_like_what_a_viewer_shows(embedder, real_world_folder):
    folder, _, sources = real_world_folder
    vector = dict(zip(
        ["upright", "exif", "alpha", "animated", "gray16", "cmyk", "gray", "coffee", "red", "astronaut_gray"],
        embedder.embed([
            folder / "upright.jpg", folder / "exif_rotated.jpg", folder / "alpha.png", folder / "animated.gif",
            folder / "gray16.png", folder / "cmyk.jpg", folder / "gray.jpg", folder / "last.jpg",
            sources["red"], sources["astronaut"].convert("L"),
        ]),
    ))
    sideways = embedder.embed([sources["astronaut"].transpose(Image.Transpose.ROTATE_90)])[0]
    assert _cosine(vector["exif"], vector["upright"]) > 0.99
    assert _cosine(vector["exif"], vector["upright"]) > _cosine(sideways, vector["upright"]) + 0.05
    np.testing.assert_allclose(vector["animated"], vector["red"], atol=0.02)  # the first frame
    np.testing.assert_allclose(vector["gray16"], vector["astronaut_gray"], atol=1e-3)
    assert _cosine(vector["cmyk"], vector["coffee"]) > 0.97
    assert _cosine(vector["gray"], vector["coffee"]) > 0.6
    white_background = Image.new("RGB", sources["astronaut"].size, (255, 255, 255))
    with Image.open(folder / "alpha.png") as with_alpha:
        white_background.paste(with_alpha, mask=with_alpha.getchannel("A"))
    np.testing.assert_allclose(vector["alpha"], embedder.embed([white_background])[0], atol=1e-5)


def test_max_pixels_refuses_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    small_limit = fastretrieve.Embedder(max_pixels=50_000)
    (result,) = small_limit.embed_paths([path])
    assert "decompression bomb" in result.error and "60000 pixels" in result.error


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: file permissions do not block root's reads")
def test_unreadable_file_is_skipped(embedder, tmp_path):
    path = tmp_path / "unreadable.jpg"
    path.write_bytes(_jpeg_bytes(Image.new("RGB", (8, 8))))
    path.chmod(0)
    (result,) = embedder.embed_paths([path])
    assert result.error == "permission denied"


def test_a_file_swapped_for_a_fifo_after_it_was_listed_is_refused_not_waited_on(tmp_path, monkeypatch):
    """The race: a check by path says "regular file", then the path names a FIFO by the time
    it is opened. Simulated by a stat that still describes the file listed earlier."""
    import pathlib
    import stat as stat_module
    import threading

    from fastretrieve.embed.decode import ImageDecodeError, load_rgb

    listed = tmp_path / "listed.jpg"
    listed.write_bytes(_jpeg_bytes(Image.new("RGB", (8, 8))))
    regular_stat = listed.stat()
    swapped = tmp_path / "swapped.jpg"
    os.mkfifo(swapped)
    real_path_stat, real_os_stat = pathlib.Path.stat, os.stat

    def stale_path_stat(self, *args, **kwargs):
        return regular_stat if self == swapped else real_path_stat(self, *args, **kwargs)

    def stale_os_stat(path, *args, **kwargs):
        return regular_stat if os.fspath(path) == str(swapped) else real_os_stat(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stale_path_stat)
    monkeypatch.setattr(os, "stat", stale_os_stat)
    assert stat_module.S_ISREG(swapped.stat().st_mode)  # the stale view the race leaves
    outcome = []

    def decode():
        try:
            load_rgb(swapped, max_pixels=10**6)
        except ImageDecodeError as error:
            outcome.append(str(error))

    worker = threading.Thread(target=decode, daemon=True)
    worker.start()
    worker.join(timeout=10)
    hung = worker.is_alive()
    if hung:  # release the blocked open() so the thread can end: a writer arrives
        descriptor = os.open(swapped, os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        worker.join(timeout=10)
    assert not hung, "decoding waited on a FIFO"
    assert outcome == ["not a regular file"]
