"""The measurement behind the default ``fastretrieve dedup`` threshold of a built-in model.

    python benchmarks/bench_cli_dedup_threshold.py [MODEL]    # default: classic

For the photos of scikit-image's bundled data (originals and distractors, as in the
embedder's near-duplicate benchmark): the cosine similarity between each photo and each
of its edited copies (one row per edit), and the highest similarity between two distinct
photos. A threshold between the weakest edit that should count as a duplicate and the
most similar distinct pair separates them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from embed_fixtures import TRANSFORMS, distractor_photos, query_photos  # noqa: E402

from fastretrieve import Embedder  # noqa: E402


def main() -> None:
    embedder = Embedder(sys.argv[1] if len(sys.argv) > 1 else "classic")
    originals = list(query_photos().values())
    distinct = originals + distractor_photos()
    vectors = embedder.embed(distinct)
    similarities = vectors @ vectors.T
    np.fill_diagonal(similarities, -np.inf)
    closest_pairs = np.sort(similarities[np.triu_indices(len(distinct), 1)])[::-1]
    originals_only = similarities[: len(originals), : len(originals)]
    print(f"{len(originals)} photos, {len(distinct)} distinct images in all")
    print(f"most similar distinct pairs (all images): {np.round(closest_pairs[:5], 4).tolist()}")
    print(f"most similar distinct pair among the photos: {originals_only.max():.4f}")
    print(f"model: {embedder.model_path.name}")
    print(f"{'edit':<18}{'min':>8}{'median':>8}")
    for name, transform in TRANSFORMS.items():
        edited = embedder.embed([transform(image, seed) for seed, image in enumerate(originals)])
        own = np.einsum("ij,ij->i", edited, vectors[: len(originals)])
        print(f"{name:<18}{own.min():>8.4f}{np.median(own):>8.4f}")


if __name__ == "__main__":
    main()
