"""fastretrieve: fast exact vector search and content-based image retrieval.

Public names:

- :func:`search` -- exact k-nearest neighbours (C++ SIMD kernel, Numba or NumPy fallback).
- :func:`distances` -- the full distance / similarity matrix between two sets of vectors.
- :func:`range_search` -- every neighbour within a radius, as FAISS returns it.
- :class:`Index` -- vectors with ids and metadata, low-precision storage, persistence.
- :class:`Embedder` -- ONNX Runtime image embeddings (built-in offline model "classic").
- :func:`capabilities` -- which backend, SIMD level, CPU features and providers are in use.
"""

from importlib import import_module as _import_module

from ._backend import capabilities
from .range_search import range_search
from .search import distances, search

__version__ = "0.1.0"

__all__ = [
    "Embedder",
    "Index",
    "IndexFormatError",
    "__version__",
    "capabilities",
    "distances",
    "range_search",
    "search",
]

# Index and Embedder are imported on first use: `import fastretrieve` stays cheap for
# users who only call search(), and ONNX Runtime is loaded only by those who embed.
_LAZY = {
    "Index": ".index",
    "IndexFormatError": ".index",
    "Embedder": ".embed",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastretrieve' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
