"""Image embeddings with ONNX Runtime: :class:`Embedder` and the built-in model "classic".

One concern per module: ``decode`` (any input to an upright RGB image), ``preprocess``
(resize, crop, normalise), ``model`` (reading what a model expects), ``providers``
(execution providers), ``download`` (model files and the cache), ``pipeline`` (the
overlapped decode/inference stream), ``classic`` (the generator of the built-in model).
"""

from .decode import ImageDecodeError
from .download import ModelDownloadError
from .embedder import EmbedError, Embedder
from .model import ModelError, Preprocessing
from .pipeline import EmbedResult
from .providers import ProviderError, ProviderFallbackWarning

__all__ = [
    "EmbedError",
    "EmbedResult",
    "Embedder",
    "ImageDecodeError",
    "ModelDownloadError",
    "ModelError",
    "Preprocessing",
    "ProviderError",
    "ProviderFallbackWarning",
]
