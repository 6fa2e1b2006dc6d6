"""Choose the retrieval head of the built-in EfficientNet-Lite0 by measurement.

For each candidate -- pooling (GAP, GeM p=3, MAC, R-MAC), how the whole picture meets the
input (pad / stretch / centre crop), input size -- it reports:

- near-duplicate recall@1 per transform (tests/embed_fixtures.py: 15 scikit-image photos,
  transformed, against the originals plus 73 distractors), the README's table;
- the same for harder transforms (HARD_TRANSFORMS: small crops, JPEG q10, 15 degree
  rotations, a mirror image, an aspect squeeze, 1/8 size), to tell heads apart where the
  README's transforms all reach 1.00;
- "views": 15 classes, each 6 random crops (15-40 % of the area) of one scikit-image
  photo, plus 20 LFW faces as a 16th class, among 100 LFW non-face patches (singletons:
  distractors only); mAP@10 / recall@1 / precision@10, leave-one-out (what
  `fastretrieve evaluate` computes).

Classic is measured by the same code. Run from the repository root (about 3 minutes on
2 shared cores):

    PYTHONPATH=tests python benchmarks/bench_retrieval_head.py
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

from embed_fixtures import TRANSFORMS, _crop, _jpeg, distractor_photos, query_photos
from fastretrieve import Embedder, search
from fastretrieve.cli.evaluation import retrieval_metrics
from fastretrieve.embed import efficientnet
from fastretrieve.embed.builtin import weight_path
from fastretrieve.embed.model import Preprocessing
from fastretrieve.embed.preprocess import preprocess
from fastretrieve.embed.torch_weights import load_state_dict

VIEWS_PER_PHOTO = 6
FACES = 20


def views_set(seed: int = 0) -> tuple[list[Image.Image], np.ndarray]:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, image in enumerate(query_photos().values()):
        w, h = image.size
        for _ in range(VIEWS_PER_PHOTO):
            area = rng.uniform(0.15, 0.40)
            aspect = rng.uniform(0.75, 1.33)
            cw = min(w, round(w * np.sqrt(area * aspect)))
            ch = min(h, round(h * np.sqrt(area / aspect)))
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            images.append(image.crop((int(x), int(y), int(x) + cw, int(y) + ch)))
            labels.append(label)
    from skimage import data

    faces = (data.lfw_subset()[:FACES] * 255).astype(np.uint8)
    images += [Image.fromarray(face).convert("RGB") for face in faces]
    labels += [len(query_photos())] * FACES
    non_faces = (data.lfw_subset()[100:] * 255).astype(np.uint8)
    images += [Image.fromarray(patch).convert("RGB") for patch in non_faces]
    labels += list(range(1000, 1000 + len(non_faces)))  # one class each: never relevant
    return images, np.array(labels)


HARD_TRANSFORMS = {
    "crop 40%": lambda im, seed: _crop(im, 0.40, seed),
    "crop 25%": lambda im, seed: _crop(im, 0.25, seed),
    "JPEG q10": lambda im, seed: _jpeg(im, 10),
    "rotate 15°": lambda im, seed: im.rotate(15, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)),
    "mirror": lambda im, seed: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "squeeze 0.7": lambda im, seed: im.resize((round(im.width * 0.7), im.height), Image.Resampling.BILINEAR),
    "resize 12.5%": lambda im, seed: im.resize((max(1, im.width // 8), max(1, im.height // 8)),
                                               Image.Resampling.BILINEAR),
}


def rmac(maps: np.ndarray, levels: int = 3) -> np.ndarray:
    """R-MAC (Tolias et al.): max-pooled square regions at several scales, each
    L2-normalised, summed. ``maps``: (n, c, h, w)."""
    n, c, h, w = maps.shape
    total = np.zeros((n, c), np.float32)
    for level in range(1, levels + 1):
        side = max(1, int(round(2 * min(h, w) / (level + 1))))
        steps_y = max(1, level + (h > w))
        steps_x = max(1, level + (w > h))
        for y in np.unique(np.linspace(0, h - side, steps_y).round().astype(int)):
            for x in np.unique(np.linspace(0, w - side, steps_x).round().astype(int)):
                region = maps[:, :, y:y + side, x:x + side].max(axis=(2, 3))
                total += region / np.maximum(np.linalg.norm(region, axis=1, keepdims=True), 1e-12)
    return total


POOLINGS = {
    "gap": lambda m: m.mean(axis=(2, 3)),
    "gem3": lambda m: np.cbrt((np.maximum(m, 1e-6) ** 3).mean(axis=(2, 3))),
    "mac": lambda m: m.max(axis=(2, 3)),
    "rmac": rmac,
}


class FeatureMaps:
    """Lite0's head feature maps for a given input size and fit, pooled on demand."""

    def __init__(self, state, size: int, fit: str):
        model = efficientnet.build_model(state, efficientnet.VARIANTS["efficientnet-lite0"], size, feature_maps=True)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options)
        self.settings = Preprocessing((size, size), fit=fit, mean=(0.5,) * 3, std=(0.5,) * 3)
        self.cache = {}

    def maps(self, images) -> np.ndarray:
        out = []
        for start in range(0, len(images), 16):
            batch = np.stack([preprocess(im.convert("RGB"), self.settings) for im in images[start:start + 16]])
            out.append(self.session.run(None, {"image": batch})[0])
        return np.concatenate(out)


class PooledEmbedder:
    def __init__(self, maps: FeatureMaps, pooling: str):
        self.maps, self.pool = maps, POOLINGS[pooling]

    def embed(self, images):
        vectors = self.pool(self.maps.maps(list(images))).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def near_duplicates(embedder, originals, distractors, queries_by_transform):
    database = embedder.embed(list(originals) + distractors)
    recall = {}
    for name, queries in queries_by_transform.items():
        best = np.argmax(embedder.embed(queries) @ database.T, axis=1)
        recall[name] = float(np.mean(best == np.arange(len(originals))))
    return recall


def semantic(embedder, images, labels):
    vectors = embedder.embed(images)
    _, neighbours = search(vectors, 10, metric="cosine")
    metrics = retrieval_metrics(labels, neighbours, 10)
    return {name: float(np.nanmean(values)) for name, values in metrics.items()}


def main(argv) -> int:
    candidates = [arg.split(":") for arg in argv] or [
        ("224", "pad", "gap"), ("224", "pad", "gem3"), ("224", "pad", "rmac"),
        ("224", "stretch", "gap"), ("224", "stretch", "gem3"), ("224", "crop", "gem3"), ("288", "pad", "gem3"),
    ]
    originals = list(query_photos().values())
    distractors = distractor_photos()
    transforms = {**TRANSFORMS, **HARD_TRANSFORMS}
    queries = {name: [t(im, seed) for seed, im in enumerate(originals)] for name, t in transforms.items()}
    images, labels = views_set()
    rows = []
    classic = Embedder("classic")
    rows.append(("classic", near_duplicates(classic, originals, distractors, queries), semantic(classic, images, labels)))
    state = load_state_dict(weight_path("efficientnet-lite0"))
    maps = {}
    for size, fit, pooling in candidates:
        key = (int(size), fit)
        if key not in maps:
            maps[key] = FeatureMaps(state, int(size), fit)
        embedder = PooledEmbedder(maps[key], pooling)
        name = f"lite0 {size} {fit} {pooling}"
        rows.append((name, near_duplicates(embedder, originals, distractors, queries), semantic(embedder, images, labels)))
        print(name, "done", file=sys.stderr)
    print("| head | min over README transforms | grayscale | " + " | ".join(HARD_TRANSFORMS)
          + " | views mAP@10 | recall@1 | P@10 |")
    print("|---" * (len(HARD_TRANSFORMS) + 6) + "|")
    for name, recall, sem in rows:
        print(f"| {name} | {min(recall[t] for t in TRANSFORMS):.2f} | {recall['grayscale']:.2f} | "
              + " | ".join(f"{recall[t]:.2f}" for t in HARD_TRANSFORMS)
              + f" | {sem['map@10']:.3f} | {sem['recall@1']:.3f} | {sem['precision@10']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
