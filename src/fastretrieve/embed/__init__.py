"""Image embeddings with ONNX Runtime: :class:`Embedder` and the built-in models
("efficientnet-lite0", the default, its int8 variant, Lite1/Lite2, and "classic").

One concern per module: ``decode`` (any input to an upright RGB image), ``preprocess``
(resize, crop, normalise), ``model`` (reading what a model expects), ``providers``
(execution providers), ``download`` (model files and the cache), ``pipeline`` (the
overlapped decode/inference stream), ``classic`` (the generator of the built-in model
"classic"), ``builtin`` (the built-in CNNs and their cache), ``efficientnet`` (their
architecture and ONNX graph), ``static_int8`` (the int8 variant, quantised from the fp32
graph), ``torch_weights`` (the restricted reader of their weights),
``whitening`` (PCA whitening learned from a collection's own vectors).
"""

from .builtin import BUILTIN_MODELS, DEFAULT_MODEL
from .decode import ImageDecodeError
from .download import ModelDownloadError
from .embedder import EmbedError, Embedder
from .model import ModelError, Preprocessing
from .pipeline import EmbedResult
from .whitening import Whitening
from .providers import ProviderError, ProviderFallbackWarning

# The names Embedder accepts for built-in models: the CNNs, then "classic".
BUILTIN_MODEL_NAMES = (*BUILTIN_MODELS, "classic")

__all__ = [
    "BUILTIN_MODEL_NAMES",
    "DEFAULT_MODEL",
    "EmbedError",
    "EmbedResult",
    "Embedder",
    "ImageDecodeError",
    "ModelDownloadError",
    "ModelError",
    "Preprocessing",
    "ProviderError",
    "ProviderFallbackWarning",
    "Whitening",
]
