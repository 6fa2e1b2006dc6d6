"""The C++ backend: thin adaptor from the backend contract to fastretrieve._core."""

from __future__ import annotations

import numpy as np

from . import _core

NAME = "cpp"

# Resolve the kernel table now: an unknown or unsupported FASTRETRIEVE_SIMD raises a
# ValueError here, which _backend reports instead of silently using another backend.
_core.simd_level()


def describe():
    return {"simd": _core.simd_level(), "simd_levels": _core.supported_levels()}


def knn(queries, database, k, metric, threads, database_sqnorms, exclude_self,
        storage="float32", quantiser=None):
    if storage == "float16":
        # The kernels read IEEE half precision as its bit patterns: a view, not a copy.
        database = database.view(np.uint16)
    low, step = quantiser if quantiser is not None else (None, None)
    return _core.knn(queries, database, k, metric, threads, database_sqnorms, exclude_self,
                     storage, low, step)


def distances(a, b, metric, threads):
    return _core.distances(a, b, metric, threads)


def sqnorms(x, threads=0):
    return _core.sqnorms(x, threads)
