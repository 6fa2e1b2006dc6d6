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


class _RecordingSessions:
    """Stands in for onnxruntime.InferenceSession on a machine without a GPU: records the
    providers and thread count each session is created with, then makes a real CPU session
    (what ONNX Runtime does when a GPU provider fails to start)."""

    def __init__(self, real):
        self.real = real
        self.created = []

    def __call__(self, path, options=None, providers=None, **kwargs):
        self.created.append((providers, options.intra_op_num_threads))
        return self.real(path, options, providers=[CPU])


@pytest.fixture
def gpu_build_without_gpu(monkeypatch, tmp_path):
    import onnxruntime as ort

    pytest.importorskip("onnx")
    model = tmp_path / "mean.onnx"
    mean_colour_model(model)
    sessions = _RecordingSessions(ort.InferenceSession)
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", sessions)
    monkeypatch.setattr(providers, "_fallback_warned", False)
    monkeypatch.setenv("FASTRETRIEVE_CACHE", str(tmp_path / "cache"))
    return model, sessions


def test_a_gpu_fallback_session_gets_the_cpu_threads(gpu_build_without_gpu):
    model, sessions = gpu_build_without_gpu
    with pytest.warns(ProviderFallbackWarning):
        embedder = Embedder(model, threads=4)
    assert embedder.provider == CPU
    assert (embedder.inference_threads, embedder.decode_threads) == (4, 2)
    assert sessions.created[-1] == ([CPU], 4)  # the session that runs: CPU, every core
    assert embedder._session.get_session_options().intra_op_num_threads == 4
    vectors = embedder.embed([np.zeros((8, 8, 3), np.uint8)])
    assert vectors.shape == (1, 3)


def test_tensorrt_gets_an_engine_cache_and_a_fixed_profile(gpu_build_without_gpu, tmp_path):
    model, sessions = gpu_build_without_gpu
    with pytest.warns(ProviderFallbackWarning):
        Embedder(model, threads=2, batch_size=8)
    gpu_session = next(providers for providers, _ in sessions.created if providers != [CPU])
    name, options = gpu_session[0]
    assert name == TENSORRT and gpu_session[1:] == [CUDA, CPU]
    engines = tmp_path / "cache" / "tensorrt"
    assert engines.is_dir()
    assert options == {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(engines),
        "trt_profile_min_shapes": "pixels:1x3x8x8",
        "trt_profile_opt_shapes": "pixels:8x3x8x8",
        "trt_profile_max_shapes": "pixels:8x3x8x8",
    }
