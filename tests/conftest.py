"""Shared fixtures: every kernel path this machine can run, the float64 oracle, and a
local Ray cluster for the distributed tests."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastretrieve import _backend, _numpy

try:
    from fastretrieve import _core, _cpp
except ImportError:  # extension not built: the C++ paths are reported as skipped
    _core = _cpp = None

try:
    from fastretrieve import _numba
except ImportError:
    _numba = None


# Every SIMD level the extension can be built with, slowest first. avx512_bf16 differs
# from avx512 only in searching bfloat16 rows with bfloat16 arithmetic (a screen).
SIMD_LEVELS = ("scalar", "avx2", "avx512", "avx512_bf16")


def _kernel_paths():
    """(id, backend module, SIMD level or None) for each path: each ISA, each backend."""
    paths = []
    levels = _core.supported_levels() if _core else []
    for level in SIMD_LEVELS:
        if level in levels:
            paths.append(pytest.param((_cpp, level), id=f"cpp-{level}"))
        else:
            reason = "extension not built" if _core is None else f"CPU lacks {level}"
            paths.append(pytest.param((None, level), id=f"cpp-{level}",
                                      marks=pytest.mark.skip(reason=reason)))
    paths.append(pytest.param((_numba, None), id="numba",
                              marks=[] if _numba else pytest.mark.skip(reason="numba missing")))
    paths.append(pytest.param((_numpy, None), id="numpy"))
    return paths


KERNEL_PATHS = _kernel_paths()


@pytest.fixture(params=KERNEL_PATHS)
def kernel_path(request, monkeypatch):
    """Makes fastretrieve.search/distances run on one backend (and SIMD level)."""
    backend, level = request.param
    monkeypatch.setattr(_backend, "_active", backend)
    if level is not None:
        previous = _core.simd_level()
        _core.force_simd_level(level)
        yield request.node.callspec.id
        _core.force_simd_level(previous)
    else:
        yield request.node.callspec.id


def oracle_scores(queries, database, metric):
    """float64 brute force: squared L2, inner product or cosine (0 for zero vectors)."""
    q = np.asarray(queries, np.float64)
    x = np.asarray(database, np.float64)
    if metric == "l2":
        return ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    dots = q @ x.T
    if metric == "ip":
        return dots
    norms = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(x, axis=1)[None, :]
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def pair_scale(metric, queries, database, rows_a, rows_b, key_a, key_b):
    """The size of the rounding errors when two candidates' exact scores are compared.

    Per pair, from the two candidates involved, never from the largest distance in a test:
    an l2 distance is computed directly, so its error scales with itself; an inner product
    with |q| |x|; a cosine similarity with 1.
    """
    if metric == "l2":
        return np.maximum(np.abs(key_a), np.abs(key_b))
    if metric == "cosine":
        return np.ones_like(key_a)
    q_norm = np.linalg.norm(np.asarray(queries, np.float64), axis=1)[:, None]
    x_norm = np.linalg.norm(np.asarray(database, np.float64), axis=1)
    return q_norm * np.maximum(x_norm[rows_a], x_norm[rows_b])


def assert_matches_oracle(queries, database, k, metric, distances, indices,
                          exclude_self=False, tie_rtol=1e-10):
    """Check (distances, indices) against the float64 oracle.

    Indices must equal the oracle's ranking (ties by lower index) except where the two
    candidates at a rank have exact scores within ``tie_rtol`` of each other, relative to
    that pair's own scale (``pair_scale``); the default 1e-10 leaves room only for the
    float64 rounding of the rescoring. Returned distances must be the float32 rounding of
    the neighbours' exact distances.
    """
    exact = oracle_scores(queries, database, metric)
    key = exact if metric == "l2" else -exact  # smaller is better
    n_queries, total = key.shape
    if exclude_self:
        key[np.arange(n_queries), np.arange(n_queries)] = np.inf
    n_valid = min(k, total - int(exclude_self))
    assert distances.shape == (n_queries, k) and indices.shape == (n_queries, k)
    assert distances.dtype == np.float32 and indices.dtype == np.int64

    order = np.lexsort((np.broadcast_to(np.arange(total), key.shape), key), axis=-1)[:, :n_valid]
    expected_key = np.take_along_axis(key, order, axis=1)
    got = indices[:, :n_valid]
    assert (got >= 0).all() and (got < total).all(), "index out of range"
    for row in got:
        assert len(set(row.tolist())) == n_valid, "a neighbour is returned twice"
    got_key = np.take_along_axis(key, got, axis=1)
    scale = pair_scale(metric, queries, database, got, order, got_key, expected_key)
    # Every returned neighbour is the oracle's at that rank, or ties with it within the band.
    band = tie_rtol * scale
    off = np.abs(got_key - expected_key) > band
    assert not off.any(), (
        f"{int(off.sum())} neighbours differ from the float64 ranking beyond ties, first at "
        f"(query, rank) {tuple(np.argwhere(off)[0])}: got key {got_key[off][0]!r}, "
        f"expected {expected_key[off][0]!r}")
    # Reported distances are the float32 rounding of the neighbours' exact distances.
    reported = distances[:, :n_valid].astype(np.float64)
    reported_key = reported if metric == "l2" else -reported
    own_scale = pair_scale(metric, queries, database, got, got, got_key, got_key)
    err = np.abs(reported_key - got_key)
    assert np.all(err <= 2.0**-24 * np.abs(got_key) * (1 + 1e-9) + 1e-12 * own_scale + 1e-300), (
        f"a returned distance is not its exact distance rounded to float32: worst error "
        f"{err.max()!r}")
    # Best first; exact ties by lower index.
    assert np.all(np.diff(got_key, axis=1) >= -band[:, 1:])
    # Padding beyond the candidates.
    pad = np.inf if metric == "l2" else -np.inf
    assert np.all(indices[:, n_valid:] == -1)
    assert np.all(distances[:, n_valid:] == pad)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """One model cache for the whole session (CLI subprocesses inherit it): the built-in
    CNN's graph is built once, into a temporary folder, never into the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("FASTRETRIEVE_CACHE")
    os.environ["FASTRETRIEVE_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("FASTRETRIEVE_CACHE", None)
    else:
        os.environ["FASTRETRIEVE_CACHE"] = previous
@pytest.fixture(scope="module")
def ray_cluster():
    """The ``ray`` module, connected to a local cluster of 2 CPUs on the loopback
    interface (no dashboard, no usage statistics), for the fastretrieve.distributed tests.
    Started per test module and shut down after it, so that Ray's processes do not run
    beside the rest of the suite."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing in the tests may reach the network
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
