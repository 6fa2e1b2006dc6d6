"""Stored rows for the Python backends: low-precision storage decoded a bounded block at a
time, so that the extra memory of a search does not grow with the index.

The C++ kernels read stored rows directly; the Numba and NumPy backends search float32,
so they walk ``decoded_blocks`` and carry their running best-k from block to block.
"""

from __future__ import annotations

import numpy as np

from .quantize import BFloat16Codec, Float16Codec, Int8Codec

# At most this many bytes of decoded float32 rows exist at a time during a search.
DECODE_BLOCK_BYTES = 16 << 20


def decoded_blocks(database, storage="float32", quantiser=None, block_rows=None):
    """Yield (first row, float32 C-contiguous block) over the stored rows.

    float32 rows are yielded as one block, without a copy, unless ``block_rows`` asks
    for smaller ones. ``storage`` and ``quantiser`` are as in ``search.knn``.
    """
    total, dim = database.shape
    if storage == "float32":
        step = block_rows or max(total, 1)
        for start in range(0, total, step):
            yield start, database[start : start + step]
        return
    codec = _codec(storage, quantiser)
    if storage == "float16":
        database = database.view(np.float16)  # its uint16 bit patterns are accepted too
    step = max(1, DECODE_BLOCK_BYTES // (4 * dim))
    if block_rows:
        step = min(step, block_rows)
    for start in range(0, total, step):
        yield start, np.ascontiguousarray(codec.decode(database[start : start + step]),
                                          np.float32)


def _codec(storage, quantiser):
    if storage == "float16":
        return Float16Codec()
    if storage == "bfloat16":
        return BFloat16Codec()
    if storage == "int8":
        low, step = quantiser
        return Int8Codec(low, step)
    raise ValueError(f"unknown storage {storage!r}")
