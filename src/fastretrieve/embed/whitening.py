"""PCA whitening learned from a collection's own vectors: :class:`Whitening`.

CNN features of one photo collection share directions that say little about which
photo is which (the collection's typical lighting, subject, camera). Whitening centres
the vectors on the collection's mean, rotates them onto its principal axes and rescales
each axis to unit variance, so that a similarity counts what distinguishes photos, not
what they all share (Jégou & Chum, "Negative evidences and co-occurrences", 2012). The
variances are shrunk towards their mean first (``shrinkage``), so that axes of almost no
variance -- noise -- are not blown up, and only the ``dims`` strongest axes are kept.
The defaults (128 axes, shrinkage 0.9: mostly centring and rotation, gently whitened)
were measured on a labelled folder of 210 images (BENCHMARKS.md): with the built-in CNN
mAP@10 0.983 -> 0.994, where full whitening (shrinkage 0.1) fell to 0.75-0.95 -- a
few hundred photos cannot estimate 1280 variances.

It is learned without labels, so a caller must check that it helps before using it:
``fastretrieve fit-whitening`` validates it on a held-out split and applies it only then.
A fitted whitening is saved as a JSON-friendly record (:meth:`Whitening.to_record`) with
its arrays as base64 float32.
"""

from __future__ import annotations

import base64

import numpy as np

DEFAULT_DIMS = 128
DEFAULT_SHRINKAGE = 0.9
MIN_VECTORS = 20
RECORD_FORMAT = 1


class Whitening:
    """A fitted PCA whitening: ``transform(x) = normalise((x - mean) @ projection)``."""

    def __init__(self, mean: np.ndarray, projection: np.ndarray):
        self.mean = np.ascontiguousarray(mean, np.float32)
        self.projection = np.ascontiguousarray(projection, np.float32)
        if self.mean.ndim != 1 or self.projection.shape[0] != self.mean.shape[0]:
            raise ValueError(f"a whitening needs mean (d,) and projection (d, k); got "
                             f"{self.mean.shape} and {self.projection.shape}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.projection).all()):
            raise ValueError("a whitening with NaN or infinite values")

    @property
    def input_dim(self) -> int:
        return self.projection.shape[0]

    @property
    def dim(self) -> int:
        """The dimension of whitened vectors."""
        return self.projection.shape[1]

    @classmethod
    def fit(cls, vectors, *, dims: int = DEFAULT_DIMS, shrinkage: float = DEFAULT_SHRINKAGE) -> "Whitening":
        """Learn the whitening of ``vectors`` (n, d), keeping at most ``dims`` axes (and at
        most n - 1: the others have no variance to learn from)."""
        vectors = np.asarray(vectors, np.float64)
        count, dim = vectors.shape
        if count < MIN_VECTORS:
            raise ValueError(f"whitening needs at least {MIN_VECTORS} vectors, got {count}")
        if not 0 <= shrinkage <= 1:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        mean = vectors.mean(axis=0)
        centred = vectors - mean
        # The SVD of the centred data gives the covariance's axes without forming d x d
        # when n < d; singular values s give variances s^2 / (n - 1).
        _, singular, axes = np.linalg.svd(centred, full_matrices=False)
        variances = singular**2 / (count - 1)
        keep = max(1, min(dims, count - 1, dim))
        shrunk = (1 - shrinkage) * variances[:keep] + shrinkage * variances[:keep].mean()
        projection = axes[:keep].T / np.sqrt(np.maximum(shrunk, 1e-12))
        return cls(mean, projection)

    def transform(self, vectors) -> np.ndarray:
        """Whitened, L2-normalised float32 vectors (n, dim)."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"expected vectors of shape (n, {self.input_dim}), got {vectors.shape}")
        whitened = (vectors - self.mean) @ self.projection
        return whitened / np.maximum(np.linalg.norm(whitened, axis=1, keepdims=True), 1e-12)

    def to_record(self) -> dict:
        """A JSON-friendly record of the whitening (see :meth:`from_record`)."""
        return {
            "format": RECORD_FORMAT,
            "input_dim": self.input_dim,
            "dim": self.dim,
            "mean": base64.b64encode(self.mean.astype("<f4").tobytes()).decode("ascii"),
            "projection": base64.b64encode(self.projection.astype("<f4").tobytes()).decode("ascii"),
        }

    @classmethod
    def from_record(cls, record: dict) -> "Whitening":
        """The whitening a :meth:`to_record` record describes; ValueError if it is malformed."""
        try:
            if record["format"] != RECORD_FORMAT:
                raise ValueError(f"unknown whitening record format {record['format']!r}")
            input_dim, dim = int(record["input_dim"]), int(record["dim"])
            mean = np.frombuffer(base64.b64decode(record["mean"], validate=True), "<f4")
            projection = np.frombuffer(base64.b64decode(record["projection"], validate=True), "<f4")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed whitening record: {error}") from None
        if mean.size != input_dim or projection.size != input_dim * dim:
            raise ValueError("malformed whitening record: array sizes do not match its dimensions")
        return cls(mean, projection.reshape(input_dim, dim))
