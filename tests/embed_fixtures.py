"""Shared helpers for the embedder tests and benchmarks: real photos, transforms, models.

Photos come from scikit-image's bundled data (a test dependency); only images that
ship inside the package are used, so nothing is downloaded.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance

QUERY_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "clock",
    "immunohistochemistry", "brick", "grass", "gravel", "cell", "page",
)


def photo(name: str) -> Image.Image:
    """A bundled scikit-image photo as an RGB PIL image."""
    from skimage import data

    if name == "motorcycle":
        pixels = data.stereo_motorcycle()[0]
    else:
        pixels = getattr(data, name)()
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    return Image.fromarray(pixels).convert("RGB")


def query_photos() -> dict[str, Image.Image]:
    """The photos queried in the near-duplicate benchmark (plus the motorcycle)."""
    return {name: photo(name) for name in (*QUERY_PHOTOS, "motorcycle")}


def distractor_photos() -> list[Image.Image]:
    """Images unrelated to the queries: quadrants of large photos, other bundled images
    and 60 small face photos from the LFW subset."""
    from skimage import data

    images = []
    for name in ("hubble_deep_field", "retina"):
        whole = photo(name)
        w, h = whole.size
        images += [whole.crop((x, y, x + w // 2, y + h // 2)) for x in (0, w // 2) for y in (0, h // 2)]
    images += [photo(name) for name in ("colorwheel", "text", "horse", "checkerboard", "microaneurysms")]
    faces = (data.lfw_subset()[:60] * 255).astype(np.uint8)
    images += [Image.fromarray(face).convert("RGB") for face in faces]
    return images


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _crop(image: Image.Image, area_fraction: float, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    side = area_fraction**0.5
    w, h = image.size
    cw, ch = round(w * side), round(h * side)
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    return image.crop((int(x), int(y), int(x) + cw, int(y) + ch))


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))


TRANSFORMS = {
    "crop 70%": lambda im, seed: _crop(im, 0.70, seed),
    "crop 85%": lambda im, seed: _crop(im, 0.85, seed),
    "resize 50%": lambda im, seed: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "resize 25%": lambda im, seed: im.resize((im.width // 4, im.height // 4), Image.Resampling.BILINEAR),
    "JPEG q30": lambda im, seed: _jpeg(im, 30),
    "JPEG q60": lambda im, seed: _jpeg(im, 60),
    "JPEG q90": lambda im, seed: _jpeg(im, 90),
    "brightness +20%": lambda im, seed: ImageEnhance.Brightness(im).enhance(1.2),
    "brightness -20%": lambda im, seed: ImageEnhance.Brightness(im).enhance(0.8),
    "contrast +20%": lambda im, seed: ImageEnhance.Contrast(im).enhance(1.2),
    "contrast -20%": lambda im, seed: ImageEnhance.Contrast(im).enhance(0.8),
    "rotate +5°": lambda im, seed: _rotate(im, 5),
    "rotate -5°": lambda im, seed: _rotate(im, -5),
    "grayscale": lambda im, seed: im.convert("L").convert("RGB"),
}


def near_duplicate_recall(embedder) -> tuple[dict[str, float], int, int]:
    """Recall@1 per transform: each transformed photo queried against the originals plus
    the distractors; a hit is its own original ranked first. Returns (recall per
    transform, number of originals, number of distractors)."""
    originals = query_photos()
    distractors = distractor_photos()
    database = embedder.embed(list(originals.values()) + distractors)
    recall = {}
    for transform_name, transform in TRANSFORMS.items():
        queries = [transform(image, seed) for seed, image in enumerate(originals.values())]
        best = np.argmax(embedder.embed(queries) @ database.T, axis=1)
        recall[transform_name] = float(np.mean(best == np.arange(len(originals))))
    return recall, len(originals), len(distractors)


# The photos of the EfficientNet reference fixture (tests/reference/).
REFERENCE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def efficientnet_reference_uint8() -> np.ndarray:
    """The reference photos as uint8 (n, 224, 224, 3): each box-filtered to 112 x 112 and
    repeated 2 x 2 by NumPy, so that no resampling code differs between machines."""
    small = [np.asarray(photo(name).resize((112, 112), Image.Resampling.BOX)) for name in REFERENCE_PHOTOS]
    return np.stack([image.repeat(2, axis=0).repeat(2, axis=1) for image in small])


def efficientnet_reference_inputs() -> np.ndarray:
    """The reference photos as the model's float32 input (n, 3, 224, 224) in [-1, 1]."""
    pixels = efficientnet_reference_uint8().astype(np.float32)
    return ((pixels / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32)


def mean_colour_model(path, *, layout: str = "NCHW", batch="N", size=8, input_type: str = "float") -> None:
    """Write a tiny ONNX image model whose output is each image's mean channel values.

    Its output is predictable (a solid-colour image embeds along its colour), which lets
    tests check layout, channel order, normalisation and batching exactly. ``size`` may be
    a symbol for a dynamic spatial size; ``input_type`` "float" or "float16".
    """
    import onnx
    from onnx import TensorProto, helper

    element = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[input_type]
    shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    spatial_axes = [2, 3] if layout == "NCHW" else [1, 2]
    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["mean_4d"], axes=spatial_axes, keepdims=0),
        helper.make_node("Cast", ["mean_4d"], ["features"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_colour",
        [helper.make_tensor_value_info("pixels", element, shape)],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
