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
  are fitted on the first batch ever added: its per-dimension minimum and maximum,
  ``step = (max - min) / 255``, but never less than ``m / 255`` with ``m`` the largest
  magnitude in the batch -- so a dimension that is constant (or nearly) in a small first
  batch keeps a range as wide as the data's scale instead of collapsing every later value
  onto one code. A later add with values outside the range widens it (by a further
  quarter of the new width on the side that grew) and re-encodes the stored vectors, so
  nothing is ever clipped; each widening re-encodes the whole index, and the floor makes
  them rare (one on the clustered data of ``benchmarks/bench_int8_fit.py``). A fit on
  fewer than 256 vectors warns.
"""

from __future__ import annotations

import warnings

import numpy as np

STORAGE_DTYPES = ("float32", "float16", "bfloat16", "int8")

_FLOAT16_MAX = 65504.0
FIT_WARNING_ROWS = 256  # an int8 fit on fewer vectors than this warns
# Chosen by recall on clustered data (benchmarks/bench_int8_fit.py, BENCHMARKS.md): every
# dimension's range is at least the data's largest magnitude wide, and a range that must
# grow gets a quarter of its new width to spare, so ranges widen about once, not per add.
STEP_FLOOR = 1.0 / 255.0  # smallest int8 step, relative to the data's largest magnitude
WIDEN_MARGIN = 1.0 / 4.0  # extra room when an int8 range must grow
_BFLOAT16_EXPONENT_MASK = 0x7F80  # all exponent bits set: infinity (NaN never gets here)


class _ParameterFreeCodec:
    """A codec with nothing to fit on the first add and nothing to save."""

    fitted = True

    def covers(self, rows):
        """Always: there is no range to outgrow."""
        return True

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
        """A codec whose range is the per-dimension min and max of ``rows`` (warns when
        there are too few of them to say much about later data)."""
        if len(rows) < FIT_WARNING_ROWS:
            warnings.warn(
                f"the int8 quantiser was fitted on {len(rows)} vector(s), fewer than "
                f"{FIT_WARNING_ROWS}: later vectors outside that range widen it, re-encoding "
                "every stored vector each time; a representative first add avoids this",
                UserWarning,
                stacklevel=3,
            )
        low = rows.min(axis=0).astype(np.float64)
        high = rows.max(axis=0).astype(np.float64)
        return Int8Codec._spanning(low, high, _scale(low, high))

    def covers(self, rows):
        """Whether every value of ``rows`` encodes without clipping."""
        levels = self._levels(rows)
        return bool(((levels >= -128.0) & (levels <= 127.0)).all())

    def widened_to(self, rows):
        """A codec whose range covers both this one's and ``rows``: each dimension that
        must grow grows by a further WIDEN_MARGIN of its new width on that side, so data
        that drifts slowly does not widen it at every add."""
        low = self.low.astype(np.float64)
        high = low + 255.0 * self.step.astype(np.float64)
        new_low = np.minimum(low, rows.min(axis=0))
        new_high = np.maximum(high, rows.max(axis=0))
        margin = WIDEN_MARGIN * (new_high - new_low)
        new_low = np.where(new_low < low, new_low - margin, low)
        new_high = np.where(new_high > high, new_high + margin, high)
        return Int8Codec._spanning(new_low, new_high, max(_scale(low, high), _scale(new_low, new_high)))

    @staticmethod
    def _spanning(low, high, scale):
        # A dimension constant so far gets the smallest step the data's scale allows, not
        # a made-up one: its range stays where the data is, so a later value that differs
        # widens it instead of being rounded onto the constant.
        step = np.maximum((high - low) / 255.0, scale * STEP_FLOOR)
        # Rounding low and step to float32 must not leave `high` outside the codes' range.
        low32 = low.astype(np.float32)
        step32 = step.astype(np.float32)
        short = low32.astype(np.float64) + 255.0 * step32.astype(np.float64) < high
        step32[short] = np.nextafter(step32[short], np.float32(np.inf))
        return Int8Codec(low32, step32)

    def _levels(self, rows):
        return np.rint((rows.astype(np.float64) - self.low) / self.step) - 128.0

    def encode(self, rows):
        levels = self._levels(rows)
        outside = int(np.count_nonzero((levels < -128.0) | (levels > 127.0)))
        if outside:
            warnings.warn(
                f"{outside} value(s) fell outside the int8 quantiser range and were clipped to it",
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


def _scale(low, high):
    """The magnitude of the data, for the smallest step: 1.0 when it is all zero."""
    scale = float(max(np.abs(low).max(initial=0.0), np.abs(high).max(initial=0.0)))
    return scale if scale > 0 else 1.0


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
