"""Execution provider choice and the post-creation check (the logic that runs on a CPU)."""

import numpy as np
import pytest

from embed_fixtures import mean_colour_model
from fastretrieve import Embedder
from fastretrieve.embed import ProviderError, ProviderFallbackWarning, providers
from fastretrieve.embed.providers import CPU, CUDA, TENSORRT, check_active, requested_providers, run_with_binding

GPU_BUILD = [TENSORRT, CUDA, CPU]


def test_auto_prefers_tensorrt_then_cuda_then_cpu():
    assert requested_providers("auto", GPU_BUILD) == [TENSORRT, CUDA, CPU]
    assert requested_providers("auto", [CUDA, CPU, "AzureExecutionProvider"]) == [CUDA, CPU]
    assert requested_providers("auto", [CPU]) == [CPU]
    assert requested_providers("cpu", GPU_BUILD) == [CPU]
    assert requested_providers("cuda", GPU_BUILD) == [TENSORRT, CUDA, CPU]


def test_explicit_providers_win_and_must_exist():
    assert requested_providers("cpu", GPU_BUILD, [(CUDA, {"device_id": 1}), CPU]) == [(CUDA, {"device_id": 1}), CPU]
    with pytest.raises(ProviderError, match="not available"):
        requested_providers("auto", [CPU], [CUDA])
    with pytest.raises(ProviderError, match="device must be"):
        requested_providers("gpu", [CPU])


def test_cuda_demanded_without_cuda_raises_with_install_hint():
    with pytest.raises(ProviderError, match="pip uninstall onnxruntime && pip install onnxruntime-gpu"):
        Embedder(device="cuda")


def test_cuda_demanded_but_not_started_raises():
    with pytest.raises(ProviderError, match="could not start CUDA"):
        check_active("cuda", [CUDA, CPU], [CPU])


def test_auto_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(providers, "_fallback_warned", False)
    with pytest.warns(ProviderFallbackWarning, match="fell back"):
        assert check_active("auto", [CUDA, CPU], [CPU]) == CPU
    assert check_active("auto", [CUDA, CPU], [CPU]) == CPU  # second time: silent (filterwarnings=error)
    assert check_active("auto", [CPU], [CPU]) == CPU
    assert check_active("auto", [CUDA, CPU], [CUDA, CPU]) == CUDA


def test_io_binding_runner_matches_plain_run(tmp_path):
    import onnxruntime as ort

    pytest.importorskip("onnx")
    path = tmp_path / "mean.onnx"
    mean_colour_model(path)
    session = ort.InferenceSession(str(path), providers=[CPU])
    batch = np.random.default_rng(0).random((5, 3, 8, 8), dtype=np.float32)
    # The same code path CUDA uses, bound to CPU memory here (no GPU on the test machine).
    bound = run_with_binding(session, "pixels", batch, "features", "cpu")
    np.testing.assert_allclose(bound, session.run(["features"], {"pixels": batch})[0], rtol=1e-6)


def test_cpu_threads_go_to_inference_and_half_of_them_to_decoding():
    embedder = Embedder(threads=4)
    assert (embedder.decode_threads, embedder.inference_threads) == (2, 4)
    assert (Embedder(threads=1).decode_threads, Embedder(threads=1).inference_threads) == (1, 1)
