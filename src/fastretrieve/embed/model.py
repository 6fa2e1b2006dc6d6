"""What an ONNX image model expects: read from the model, a JSON sidecar and arguments.

The input tensor's name, layout (NCHW or NHWC), spatial size and batch axis come from
the model. Preprocessing comes, in order of precedence, from the ``Embedder`` arguments,
then from a JSON sidecar next to the model (``model.onnx`` -> ``model.json``, with the
same keys as the arguments), then from defaults that match torchvision's ImageNet models
(bilinear resize to size / 0.875, centre crop, mean/std of ImageNet, RGB, pixels / 255).
A model this module cannot drive is refused with a :class:`ModelError` that says why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
FITS = ("crop", "pad", "stretch")
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class ModelError(ValueError):
    """A model (or its preprocessing settings) that the embedder cannot drive."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor.

    ``fit`` says how the picture meets the input size. "crop" (torchvision's ImageNet
    recipe): the image is resized (``interpolation``) so it covers ``image_size /
    crop_fraction`` -- for a square input, its shorter side becomes ``size /
    crop_fraction`` -- then the central ``image_size`` is cropped, so the sides of a
    non-square picture are lost. "pad": the whole picture is resized to fit inside
    ``image_size``, keeping its aspect ratio, and centred on a border of zeros (after
    normalisation). "stretch": the whole picture is resized to exactly ``image_size``.
    ``crop_fraction`` applies to "crop" only (it is 1.0 for the others).
    Pixels are multiplied by ``pixel_scale``, then ``(x - mean) / std`` per channel, in
    ``channel_order`` ("RGB" or "BGR"), laid out as ``layout`` ("NCHW" or "NHWC").
    """

    image_size: tuple[int, int]
    layout: str = "NCHW"
    fit: str = "crop"
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pixel_scale: float = 1.0 / 255.0
    channel_order: str = "RGB"

    def __post_init__(self):
        if self.layout not in ("NCHW", "NHWC"):
            raise ModelError(f"layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ModelError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ModelError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.fit not in FITS:
            raise ModelError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.fit != "crop":  # nothing is cropped: one canonical value for the fingerprint
            object.__setattr__(self, "crop_fraction", 1.0)
        if not 0 < self.crop_fraction <= 1:
            raise ModelError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ModelError(f"mean and std need 3 values each, std non-zero; got {self.mean}, {self.std}")

    def as_dict(self) -> dict:
        """JSON-friendly settings (part of the embedder's fingerprint)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


PREPROCESSING_KEYS = {field.name for field in fields(Preprocessing)}


@dataclass(frozen=True)
class ModelSignature:
    """The input and output an embedder feeds and reads.

    ``batch_size`` is the model's fixed batch size, or None when the batch axis is dynamic.
    """

    input_name: str
    input_dtype: type
    layout: str | None
    image_size: tuple[int, int] | None
    batch_size: int | None
    output_name: str


def read_signature(session, output: str | None = None) -> ModelSignature:
    """Inspect an ``onnxruntime.InferenceSession`` and describe how to drive it."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ModelError(f"the model has {len(inputs)} inputs {names}; an image model needs exactly one")
    tensor = inputs[0]
    if tensor.type not in INPUT_TYPES:
        raise ModelError(f"input {tensor.name!r} has type {tensor.type}; expected float or float16 image tensor")
    shape = list(tensor.shape)
    if len(shape) != 4:
        raise ModelError(f"input {tensor.name!r} has shape {shape}; an image model takes a 4-D batch (N, C, H, W) "
                         "or (N, H, W, C)")
    layout, spatial = _layout_and_spatial(shape)
    static = [d if isinstance(d, int) and d > 0 else None for d in spatial]
    image_size = tuple(static) if None not in static else None
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    outputs = {o.name: o for o in session.get_outputs()}
    if output is None:
        output = next(iter(outputs))
    elif output not in outputs:
        raise ModelError(f"the model has no output {output!r}; its outputs are {list(outputs)}")
    if outputs[output].type not in INPUT_TYPES:
        raise ModelError(f"output {output!r} has type {outputs[output].type}; expected float features")
    return ModelSignature(tensor.name, INPUT_TYPES[tensor.type], layout, image_size, batch, output)


def _layout_and_spatial(shape):
    channels_first = shape[1] == 3
    channels_last = shape[3] == 3
    if channels_first and not channels_last:
        return "NCHW", shape[2:4]
    if channels_last and not channels_first:
        return "NHWC", shape[1:3]
    # Ambiguous (e.g. every axis dynamic): the caller must say, via layout=.
    return None, [None, None]


def sidecar_path(model_path: Path) -> Path:
    """The JSON file whose preprocessing settings accompany ``model_path``."""
    return model_path.with_suffix(".json")


def read_sidecar(model_path: Path) -> dict:
    """Preprocessing settings from the JSON sidecar, or {} when there is none."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot read the preprocessing sidecar {path}: {error}") from None
    if not isinstance(settings, dict):
        raise ModelError(f"the preprocessing sidecar {path} must hold a JSON object")
    unknown = set(settings) - PREPROCESSING_KEYS
    if unknown:
        raise ModelError(f"unknown keys {sorted(unknown)} in {path}; allowed: {sorted(PREPROCESSING_KEYS)}")
    return settings


def resolve_preprocessing(signature: ModelSignature, sidecar: dict, overrides: dict) -> Preprocessing:
    """Merge arguments over sidecar over what the model says, and check they fit the model."""
    settings = {**sidecar, **{k: v for k, v in overrides.items() if v is not None}}
    layout = settings.pop("layout", None) or signature.layout
    if layout is None:
        raise ModelError("cannot tell whether the model input is NCHW or NHWC (no axis of size 3); "
                         "pass layout='NCHW' or layout='NHWC'")
    if signature.layout is not None and layout != signature.layout:
        raise ModelError(f"layout={layout!r} contradicts the model input, which is {signature.layout}")
    size = settings.pop("image_size", None)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if signature.image_size is not None and size != signature.image_size:
            raise ModelError(f"image_size={size} contradicts the model input size {signature.image_size}")
    size = size or signature.image_size
    if size is None:
        raise ModelError("the model input has dynamic height and width; pass image_size=(height, width) "
                         "or put \"image_size\" in the sidecar JSON")
    for key in ("mean", "std"):
        if key in settings:
            settings[key] = tuple(float(v) for v in settings[key])
    return Preprocessing(image_size=size, layout=layout, **settings)
