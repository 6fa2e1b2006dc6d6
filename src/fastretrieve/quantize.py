"""Storage codecs: how an `Index` keeps its vectors in float32, float16, bfloat16 or int8.

Every codec turns float32 rows into stored codes (``encode``) and back (``decode``).
Search on low-precision storage is exact with respect to the *decoded* vectors, so the
only error is the rounding done once, at insert time, by ``encode``. The C++ kernels
read the codes directly and widen them exactly as ``decode`` does (csrc/knn.cpp rescores
with the same arithmetic); the Numba and NumPy backends search ``decode``d blocks.

- ``float32``: stored as given.
- ``float16``: IEEE half precision, round to nearest even. A value beyond the float16
  range (magnitude above 65504 after rounding) is an error, never an infinity.
- ``bfloat16``: the upper 16 bits of the float32 pattern, round to nearest even, kept as
  ``uint16`` (NumPy has no bfloat16 type). Same range as float32, 8 bits of mantissa.
- ``int8``: scalar quantisation per dimension, ``x = low[j] + (code + 128) * step[j]``
  computed in float32 (multiply, then add), codes in [-128, 127]. ``low`` and ``step``
  are fitted on the first batch ever added (its per-dimension minimum and maximum,
  ``step = (max - min) / 255``) and never change afterwards. Later values outside the
  fitted range are clipped to it, with a `UserWarning` saying how many; make the first
  batch representative of the data.
"""

from __future__ import annotations

import warnings

import numpy as np

STORAGE_DTYPES = ("float32", "float16", "bfloat16", "int8")

_FLOAT16_MAX = 65504.0
_BFLOAT16_EXPONENT_MASK = 0x7F80  # all exponent bits set: infinity (NaN never gets here)


class _ParameterFreeCodec:
    """A codec with nothing to fit on the first add and nothing to save."""

    fitted = True

    def state(self):
        """Parameters saved with the index (none for this codec)."""
        return np.empty(0, np.float32)


class Float32Codec(_ParameterFreeCodec):
    """Identity codec: float32 rows stored as they are."""

    name = "float32"
    stored_dtype = np.dtype("<f4")

    def encode(self, rows):
        return rows

    def decode(self, codes):
        return np.ascontiguousarray(codes, dtype=np.float32)


class Float16Codec(_ParameterFreeCodec):
    """IEEE half precision; values beyond +-65504 are rejected."""

    name = "float16"
    stored_dtype = np.dtype("<f2")

    def encode(self, rows):
        with np.errstate(over="ignore"):  # overflow is detected and reported below
            codes = rows.astype(self.stored_dtype)
        overflow = np.isinf(codes).any(axis=1)
        if overflow.any():
            row = int(np.argmax(overflow))
            raise ValueError(
                f"vecs row {row} has a value outside the float16 range "
                f"(largest magnitude {_FLOAT16_MAX:g}); use dtype float32 or bfloat16"
            )
        return codes

    def decode(self, codes):
        return codes.astype(np.float32)


class BFloat16Codec(_ParameterFreeCodec):
    """bfloat16 kept as uint16 bit patterns (the upper half of a float32)."""

    name = "bfloat16"
    stored_dtype = np.dtype("<u2")

    def encode(self, rows):
        bits = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32)
        # Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then truncate.
        rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
        codes = (rounded >> np.uint32(16)).astype(self.stored_dtype)
        overflow = ((codes & _BFLOAT16_EXPONENT_MASK) == _BFLOAT16_EXPONENT_MASK).any(axis=1)
        if overflow.any():
            row = int(np.argmax(overflow))
            raise ValueError(
                f"vecs row {row} has a value that rounds to infinity in bfloat16 "
                "(magnitude near the float32 maximum)"
            )
        return codes

    def decode(self, codes):
        return (codes.astype(np.uint32) << np.uint32(16)).view(np.float32)


class Int8Codec:
    """Per-dimension scalar quantiser to int8 codes; see the module docstring."""

    name = "int8"
    stored_dtype = np.dtype("i1")

    def __init__(self, low=None, step=None):
        self.low = low
        self.step = step

    @property
    def fitted(self):
        return self.low is not None

    def fitted_to(self, rows):
        """A codec whose range is the per-dimension min and max of ``rows``."""
        low = rows.min(axis=0).astype(np.float64)
        high = rows.max(axis=0).astype(np.float64)
        step = (high - low) / 255.0
        # A constant dimension has no range to spread codes over; any positive step
        # decodes its fitted value exactly (code -128 gives `low`).
        step[step <= 0] = 1.0
        return Int8Codec(low.astype(np.float32), step.astype(np.float32))

    def encode(self, rows):
        levels = np.rint((rows.astype(np.float64) - self.low) / self.step) - 128.0
        outside = int(np.count_nonzero((levels < -128.0) | (levels > 127.0)))
        if outside:
            warnings.warn(
                f"{outside} value(s) fell outside the int8 quantiser range fitted on the "
                "first add and were clipped to it",
                UserWarning,
                stacklevel=3,
            )
        return np.clip(levels, -128.0, 127.0).astype(self.stored_dtype)

    def decode(self, codes):
        return (codes.astype(np.float32) + np.float32(128.0)) * self.step + self.low

    def state(self):
        """``[low, step]`` as a float32 (2, dim) array; empty before the first add."""
        if not self.fitted:
            return np.empty(0, np.float32)
        return np.stack([self.low, self.step]).astype("<f4")


def make_codec(dtype, state=None):
    """The codec for storage ``dtype``; ``state`` restores a saved int8 quantiser.

    ``state`` must already be validated: a float32 (2, dim) array, finite, step > 0.
    """
    if dtype == "float32":
        return Float32Codec()
    if dtype == "float16":
        return Float16Codec()
    if dtype == "bfloat16":
        return BFloat16Codec()
    if dtype == "int8":
        if state is None or state.size == 0:
            return Int8Codec()
        return Int8Codec(np.array(state[0], np.float32), np.array(state[1], np.float32))
    raise ValueError(
        f"unknown storage dtype {dtype!r}: expected one of {', '.join(STORAGE_DTYPES)}"
    )


def storage_dtype_name(dtype):
    """Normalise a user's dtype argument ("float16", np.float16, ...) to a codec name."""
    if isinstance(dtype, str):
        name = dtype.lower()
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in STORAGE_DTYPES:
        raise ValueError(
            f"unknown storage dtype {dtype!r}: expected one of {', '.join(STORAGE_DTYPES)}"
        )
    return name
