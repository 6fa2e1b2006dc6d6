"""Choosing ONNX Runtime execution providers and checking which one really runs.

ONNX Runtime silently falls back to the CPU when a GPU provider fails to initialise
(missing CUDA or cuDNN libraries, no driver). So after a session is created we ask it
which providers are active: ``device="cuda"`` raises when CUDA is not among them, and
``device="auto"`` warns once per process when it tried a GPU provider and got the CPU.

When a GPU provider fails to start, the embedder recreates its session for the CPU with
every core (a GPU session keeps one intra-op thread, since the GPU does the work).
TensorRT gets an engine cache in the model cache folder and a fixed optimisation profile
(`with_tensorrt_options`).

The CUDA and TensorRT paths (provider options, IO binding) have not yet been run on GPU
hardware.
"""

from __future__ import annotations

import warnings

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
DEVICES = ("auto", "cuda", "cpu")

INSTALL_HINT = (
    "install the GPU build of ONNX Runtime instead of the CPU one: "
    "pip uninstall onnxruntime && pip install onnxruntime-gpu "
    "(and the CUDA/cuDNN libraries it needs)"
)

_fallback_warned = False


class ProviderError(RuntimeError):
    """The requested device cannot be used."""


class ProviderFallbackWarning(RuntimeWarning):
    """ONNX Runtime silently fell back from a GPU provider to the CPU."""


def requested_providers(device: str, available: list[str], providers=None) -> list:
    """The provider list to create a session with.

    ``providers`` (names or ``(name, options)`` pairs, as ONNX Runtime takes them) wins
    when given. Otherwise ``device`` picks, in order of preference among ``available``:
    "auto" -> TensorRT, CUDA, CPU; "cuda" -> TensorRT, CUDA, CPU (CUDA required);
    "cpu" -> CPU only.
    """
    if providers is not None:
        missing = [name for name in map(provider_name, providers) if name not in available]
        if missing:
            raise ProviderError(f"providers {missing} are not available; available: {available}")
        return list(providers)
    if device not in DEVICES:
        raise ProviderError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return [CPU]
    if device == "cuda" and CUDA not in available:
        raise ProviderError(
            f"device='cuda' but this ONNX Runtime has no CUDA provider (available: {available}); "
            + INSTALL_HINT
        )
    return [name for name in (*GPU_PROVIDERS, CPU) if name in available]


def with_tensorrt_options(requested: list, input_name: str, item_shape: tuple, batch_size: int,
                          cache_folder) -> list:
    """``requested`` with TensorRT given an engine cache and one fixed optimisation profile.

    Without a cache TensorRT builds its engines again in every process (minutes for a
    large model); without an explicit profile it rebuilds them for every new batch shape.
    The profile covers batches of 1 to ``batch_size`` images of ``item_shape`` (the input
    without its batch axis), the only shapes the embedder ever feeds.
    """
    dims = "x".join(str(int(d)) for d in item_shape)
    options = {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_folder),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_folder),
        "trt_profile_min_shapes": f"{input_name}:1x{dims}",
        "trt_profile_opt_shapes": f"{input_name}:{batch_size}x{dims}",
        "trt_profile_max_shapes": f"{input_name}:{batch_size}x{dims}",
    }
    return [(TENSORRT, options) if provider_name(p) == TENSORRT else p for p in requested]


def provider_name(provider) -> str:
    """The name of a provider given as a name or a ``(name, options)`` pair."""
    return provider if isinstance(provider, str) else provider[0]


def check_active(device: str, requested: list, active: list[str]) -> str:
    """Compare what the session runs with what was requested; return the main provider.

    Raises :class:`ProviderError` if CUDA was demanded and is not active; warns once
    (:class:`ProviderFallbackWarning`) if a GPU provider was requested and only the CPU runs.
    """
    global _fallback_warned
    main = active[0]
    requested_gpu = [name for name in map(provider_name, requested) if name in GPU_PROVIDERS]
    gpu_active = any(name in GPU_PROVIDERS for name in active)
    if device == "cuda" and CUDA not in active:
        raise ProviderError(
            f"device='cuda' but ONNX Runtime could not start CUDA (active providers: {active}); "
            "check the CUDA and cuDNN versions your onnxruntime-gpu build needs, or "
            + INSTALL_HINT
        )
    if requested_gpu and not gpu_active and not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            f"ONNX Runtime could not start {requested_gpu} and fell back to {main}; "
            "embedding runs on the CPU. Pass device='cpu' to silence this, or device='cuda' "
            "to make it an error.",
            ProviderFallbackWarning,
            stacklevel=3,
        )
    return main


def uses_gpu_memory(provider: str) -> bool:
    """Whether a session's inputs live in GPU memory (so IO binding pays off)."""
    return provider in GPU_PROVIDERS


def run_with_binding(session, input_name: str, batch, output_name: str, device: str):
    """Run one batch through IO binding: the batch crosses to ``device`` memory once and
    the output is allocated there, then copied back to a NumPy array."""
    binding = session.io_binding()
    binding.bind_cpu_input(input_name, batch)
    binding.bind_output(output_name, device)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]
