"""Backend and SIMD-level choice: defaults, environment overrides, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fastretrieve as fr
from conftest import SIMD_LEVELS

try:
    from fastretrieve import _core
except ImportError:
    _core = None

needs_core = pytest.mark.skipif(_core is None, reason="extension not built")

_REPORT = "import json, fastretrieve as fr; print(json.dumps(fr.capabilities()))"


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@needs_core
def test_capabilities_report_the_cpp_backend_and_best_level():
    info = fr.capabilities()
    assert info["backend"] == "cpp"
    assert info["simd"] == _core.default_simd_level()
    assert info["simd"] in _core.supported_levels()[-2:]
    assert set(info["cpu_features"]) == {"avx2", "avx512", "avx512_bf16", "avx512_fp16",
                                         "avx512_vnni", "amx", "neon"}
    assert info["threads"] >= 1
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    if info["cpu_features"]["avx512"]:  # avx512_bf16 where its bfloat16 arithmetic is fast
        assert info["simd"] in ("avx512", "avx512_bf16")


@needs_core
@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_simd_environment_variable_forces_a_level(level):
    if level not in _core.supported_levels():
        pytest.skip(f"CPU lacks {level}")
    result = run_python(_REPORT, FASTRETRIEVE_SIMD=level)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["simd"] == level


@needs_core
def test_unknown_simd_level_is_a_clear_error():
    result = run_python(_REPORT, FASTRETRIEVE_SIMD="avx9000")
    assert result.returncode != 0
    assert "unknown SIMD level 'avx9000'; available on this CPU: scalar" in result.stderr


@needs_core
def test_forcing_an_unsupported_level_names_the_available_ones():
    missing = [lvl for lvl in SIMD_LEVELS if lvl not in _core.supported_levels()]
    if not missing:
        pytest.skip("this CPU supports every level")
    result = run_python(_REPORT, FASTRETRIEVE_SIMD=missing[0])
    assert result.returncode != 0 and "is not supported by this CPU" in result.stderr


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_backend_environment_variable_forces_a_backend(backend):
    code = (
        "import json, numpy as np, fastretrieve as fr;"
        "d, i = fr.search(np.eye(4, dtype=np.float32), 1);"
        "print(json.dumps([fr.capabilities()['backend'], i.ravel().tolist()]))"
    )
    result = run_python(code, FASTRETRIEVE_BACKEND=backend)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [backend, [1, 0, 0, 0]]


def test_unknown_backend_is_a_clear_error():
    result = run_python(_REPORT, FASTRETRIEVE_BACKEND="cuda")
    assert result.returncode != 0
    assert "FASTRETRIEVE_BACKEND='cuda' is not one of cpp, numba, numpy" in result.stderr


def test_import_is_cheap_and_lazy():
    code = "import sys, fastretrieve; print(sorted(m for m in ('numba', 'onnxruntime') if m in sys.modules))"
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
