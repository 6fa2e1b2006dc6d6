"""Chooses the search backend: the C++ extension, else the Numba kernels, else NumPy.

``FASTRETRIEVE_BACKEND=cpp|numba|numpy`` forces one; forcing a backend that cannot be
loaded is an error rather than a silent downgrade. The choice is made once, on the first
search, so that importing fastretrieve never compiles Numba code.

Every backend offers the same three calls, with the same semantics:

- ``knn(queries, database, k, metric, threads, database_sqnorms, exclude_self,
  storage="float32", quantiser=None)`` (low-precision rows as ``search.knn`` describes)
- ``distances(a, b, metric, threads)``
- ``sqnorms(x, threads)``
"""

from __future__ import annotations

import os
import threading

BACKENDS = ("cpp", "numba", "numpy")

_lock = threading.Lock()
_active = None


def _load(name):
    if name == "cpp":
        from . import _cpp

        return _cpp
    if name == "numba":
        from . import _numba

        return _numba
    if name == "numpy":
        from . import _numpy

        return _numpy
    raise ValueError(f"FASTRETRIEVE_BACKEND={name!r} is not one of {', '.join(BACKENDS)}")


def active_backend():
    """The backend module in use (chosen once per process)."""
    global _active
    if _active is None:
        with _lock:
            if _active is None:
                _active = _choose()
    return _active


def _choose():
    forced = os.environ.get("FASTRETRIEVE_BACKEND", "").strip().lower()
    if forced:
        try:
            return _load(forced)
        except ImportError as error:
            raise ImportError(
                f"FASTRETRIEVE_BACKEND={forced} was requested but cannot be loaded: {error}"
            ) from error
    for name in BACKENDS:
        try:
            return _load(name)
        except ImportError:
            continue
    raise ImportError("no fastretrieve backend could be loaded")  # numpy always loads


def default_threads():
    """Cores this process may run on (respects CPU affinity and cgroup pinning)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def capabilities():
    """What this process runs on.

    Returns a dict with ``backend`` (cpp / numba / numpy), ``simd`` (the kernel level in
    use, e.g. "avx512"; None outside the C++ backend), ``simd_levels`` (levels this CPU
    can run), ``cpu_features`` (AVX2, AVX-512, AVX512-BF16/FP16, AMX, NEON: bools),
    ``threads`` (default worker count) and ``onnxruntime_providers`` (execution providers
    of the installed ONNX Runtime, empty when it is missing).
    """
    backend = active_backend()
    info = {
        "backend": backend.NAME,
        "simd": None,
        "simd_levels": [],
        "cpu_features": {},
        "threads": default_threads(),
    }
    info.update(backend.describe())
    try:  # feature detection lives in the extension, whichever backend searches
        from . import _core

        info["cpu_features"] = dict(_core.cpu_features())
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        info["onnxruntime_providers"] = []
    return info
