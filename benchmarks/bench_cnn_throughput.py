"""Throughput of the built-in CNN on the CPU: the model alone, its static int8 variant,
ONNX Runtime settings, and end-to-end `fastretrieve index` on a folder of 640-px JPEGs.

    python benchmarks/bench_cnn_throughput.py [--images 192] [--repeats 5]

Model alone: a batch of 16 (or as given) preprocessed inputs, run `--repeats` times after
a warm-up, median images/s, with the session options the Embedder uses (all cores,
no spinning) and each graph optimisation level. int8: the built-in
"efficientnet-lite0-int8" (static QDQ with bias correction, fastretrieve.embed.static_int8,
built on first use); also reported: its vectors' cosine to fp32 on the sample photos. End to end: `fastretrieve
index` (a fresh index) on `--images` JPEGs of 640 x 480 made from scikit-image photos,
against the decode-and-preprocess rate of the same files alone (one thread per core).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from embed_fixtures import query_photos  # noqa: E402

from fastretrieve import Embedder  # noqa: E402
from fastretrieve._backend import default_threads  # noqa: E402
from fastretrieve.embed import builtin  # noqa: E402
from fastretrieve.embed.decode import load_rgb  # noqa: E402
from fastretrieve.embed.preprocess import draft_size, preprocess  # noqa: E402

SAMPLES = Path(builtin.__file__).resolve().parents[1] / "samples"
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def session(path, level="all", threads=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = LEVELS[level]
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def model_rate(sess, batch: np.ndarray, repeats: int) -> float:
    sess.run(None, {"image": batch})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, {"image": batch})
        times.append(time.perf_counter() - start)
    return len(batch) / float(np.median(times))


def make_jpegs(folder: Path, count: int) -> list[Path]:
    photos = list(query_photos().values())
    paths = []
    for number in range(count):
        image = photos[number % len(photos)]
        image = ImageOps.fit(image, (640, 480)) if number % 2 else ImageOps.mirror(ImageOps.fit(image, (640, 480)))
        path = folder / f"{number:04d}.jpg"
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def decode_rate(paths, embedder) -> float:
    draft = draft_size(embedder.preprocessing)

    def prepare(path):
        return preprocess(load_rgb(path, max_pixels=10**8, draft_size=draft), embedder.preprocessing)

    with ThreadPoolExecutor(default_threads()) as pool:
        start = time.perf_counter()
        list(pool.map(prepare, paths))
        return len(paths) / (time.perf_counter() - start)


def batch_sweep(repeats: int, rounds: int = 3) -> None:
    """Model-alone images/s of the fp32 and int8 models at batch sizes 1 to 32, the sizes
    alternating within each of ``rounds`` rounds so that a noisy machine slows them alike."""
    data = np.random.default_rng(0).uniform(-1, 1, (32, 3, 224, 224)).astype(np.float32)
    for name in ("efficientnet-lite0", "efficientnet-lite0-int8"):
        sess = session(Embedder(name).model_path)
        rates = {size: [] for size in (1, 4, 8, 16, 32)}
        for _ in range(rounds):
            for size, bucket in rates.items():
                bucket.append(model_rate(sess, data[:size], repeats))
        print(f"{name} model alone, images/s per round: " +
              "; ".join(f"batch {size}: {', '.join(f'{r:.0f}' for r in bucket)}"
                        for size, bucket in rates.items()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batch-sweep", action="store_true",
                        help="only the model-alone rates at batch sizes 1-32, in 3 rounds")
    args = parser.parse_args()
    if args.batch_sweep:
        batch_sweep(args.repeats)
        return 0
    embedder = Embedder()
    fp32 = embedder.model_path
    batch = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 224, 224)).astype(np.float32)
    print(f"{default_threads()} threads, ONNX Runtime {ort.__version__}; machine shared with other jobs")
    for level in LEVELS:
        print(f"fp32 model alone, batch {args.batch}, optimisation {level}: "
              f"{model_rate(session(fp32, level), batch, args.repeats):.0f} images/s")
    for size in (1, 8, 32):
        some = np.repeat(batch[:1], size, axis=0)
        print(f"fp32 model alone, batch {size}: {model_rate(session(fp32), some, args.repeats):.0f} images/s")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        int8 = Embedder("efficientnet-lite0-int8")
        print(f"int8 model ready in {time.perf_counter() - start:.0f} s (built on first use, then cached)")
        print(f"int8 model alone, batch {args.batch}: "
              f"{model_rate(session(int8.model_path), batch, args.repeats):.0f} images/s")
        samples = sorted(SAMPLES.glob("*.jpg"))
        cosine = np.einsum("ij,ij->i", embedder.embed(samples), int8.embed(samples))
        print(f"int8 vs fp32 cosine on the samples: min {cosine.min():.3f}, median {np.median(cosine):.3f}")

        paths = make_jpegs(Path(folder), args.images)
        print(f"decode + preprocess alone ({default_threads()} threads): {decode_rate(paths, embedder):.0f} images/s")
        for model in ("efficientnet-lite0", "classic"):
            index = Path(folder) / f"{model}.fri"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fastretrieve", "index", folder, "-o", index, "--model", model, "-q"],
                           check=True, env=dict(os.environ))
            elapsed = time.perf_counter() - start
            print(f"fastretrieve index ({model}), {args.images} JPEGs 640x480: {args.images / elapsed:.0f} images/s "
                  "end to end, process start and model load included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
