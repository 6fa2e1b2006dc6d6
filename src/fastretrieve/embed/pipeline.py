"""The streaming embed pipeline: decode in a thread pool while ONNX Runtime runs batches.

Pillow and NumPy release the GIL while decoding, resizing and normalising, and ONNX
Runtime releases it while running, so a pool of decode threads keeps the next batches
ready while the calling thread runs the current one. At most ``2 * batch_size +
workers`` images are decoded ahead, so memory stays bounded however many inputs stream
through, and results come out in input order, failures included.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from .decode import ImageDecodeError


class EmbedResult(NamedTuple):
    """One input's outcome: ``vector`` (float32, shape (dim,)) or ``error`` (the reason).

    ``sha256`` is the hex digest of the very bytes that were decoded, when the embedder
    was asked for it (``embed_paths(..., sha256=True)``, file inputs), else None.
    """

    source: object
    vector: np.ndarray | None
    error: str | None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        """True when the input was embedded."""
        return self.error is None


def _prepare_or_reason(prepare, source):
    """``(array, sha256, None)`` or ``(None, None, reason)``."""
    try:
        return (*prepare(source), None)
    except ImageDecodeError as error:
        return None, None, str(error)
    except Exception as error:  # one odd file must not stop a 100k-file run
        return None, None, f"unexpected {type(error).__name__}: {error}"


def stream_embeddings(
    sources: Iterable,
    prepare: Callable[[object], tuple[np.ndarray, str | None]],
    infer: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int,
    workers: int,
) -> Iterator[EmbedResult]:
    """Yield an :class:`EmbedResult` per source, in order.

    ``prepare`` turns a source into one model input and the sha256 of the bytes it decoded
    (or None), raising ``ImageDecodeError`` with a reason when it cannot; it runs in the
    decode threads. ``infer`` turns a stacked batch into (n, dim) vectors.
    """
    lookahead = 2 * batch_size + workers
    remaining = iter(sources)
    decoding: deque = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastretrieve-decode")

    def top_up():
        while len(decoding) < lookahead:
            try:
                source = next(remaining)
            except StopIteration:
                return
            decoding.append((source, pool.submit(_prepare_or_reason, prepare, source)))

    def run_batch(waiting):
        vectors = iter(infer(np.stack([array for _, array, _, _ in waiting if array is not None])))
        for source, array, digest, reason in waiting:
            if array is None:
                yield EmbedResult(source, None, reason)
            else:
                yield EmbedResult(source, next(vectors), None, digest)

    try:
        top_up()
        waiting, ready = [], 0
        while decoding:
            source, future = decoding.popleft()
            top_up()
            array, digest, reason = future.result()
            if array is None and ready == 0:
                # Nothing ahead of it still needs the model: report it now rather than
                # holding a long run of failures until the next batch fills.
                yield EmbedResult(source, None, reason)
                continue
            waiting.append((source, array, digest, reason))
            ready += array is not None
            if ready == batch_size:
                yield from run_batch(waiting)
                waiting, ready = [], 0
        if ready:
            yield from run_batch(waiting)
    finally:
        # Also reached when the consumer stops early: drop the decodes nobody will read.
        pool.shutdown(wait=True, cancel_futures=True)
