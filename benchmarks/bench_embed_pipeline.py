"""Embedding pipeline throughput: decode-only, model-only, end-to-end and a naive loop.

    python benchmarks/bench_embed_pipeline.py [--images 240] [--resnet-images 48] [--repeats 3]

For the built-in "classic" model and a ResNet-50-sized ONNX graph built here with random
weights (same layer shapes and FLOPs as ResNet-50; needs the ``onnx`` package), on JPEG
photos generated from scikit-image's bundled images (about 1024 x 768, quality 90):

- decode-only: the embedder's decode + preprocess stage alone, on its decode threads;
- model-only: ONNX Runtime on already-preprocessed batches, on its inference threads;
- end-to-end: ``Embedder.embed_paths`` (both stages overlapped);
- naive: open, preprocess and run one image at a time in one loop (full-size decode,
  ONNX Runtime with its default threads).

Each figure is the median of ``--repeats`` rounds, in images per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from embed_fixtures import QUERY_PHOTOS, photo  # noqa: E402

from fastretrieve import Embedder  # noqa: E402
from fastretrieve.embed.preprocess import preprocess  # noqa: E402

PHOTO_SIZE = (1024, 768)


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` distinct JPEG photos: random crops and flips of the bundled photos."""
    rng = np.random.default_rng(0)
    sources = [photo(name) for name in QUERY_PHOTOS]
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        w, h = source.size
        cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = source.crop((x, y, x + cw, y + ch)).resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
        if index % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"photo_{index:05d}.jpg"
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def build_resnet50_like(path: Path) -> None:
    """A graph with ResNet-50's convolutions (batch norm folded away), random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights = [], []

    def conv(source, in_ch, out_ch, kernel, stride=1, relu=True):
        name = f"conv{len(nodes)}"
        std = (2.0 / (in_ch * kernel * kernel)) ** 0.5
        weights.append(numpy_helper.from_array(
            (rng.standard_normal((out_ch, in_ch, kernel, kernel)) * std).astype(np.float32), f"{name}_w"))
        weights.append(numpy_helper.from_array(np.zeros(out_ch, np.float32), f"{name}_b"))
        pad = kernel // 2
        nodes.append(helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [name],
                                      kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
        return f"{name}_relu"

    x = conv("image", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["stem_pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, channels = "stem_pool", 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            y = conv(x, channels, width, 1)
            y = conv(y, width, width, 3, stride)
            y = conv(y, width, width * 4, 1, relu=False)
            shortcut = conv(x, channels, width * 4, 1, stride, relu=False) if block == 0 else x
            added = f"add{len(nodes)}"
            nodes.append(helper.make_node("Add", [y, shortcut], [added]))
            nodes.append(helper.make_node("Relu", [added], [f"{added}_relu"]))
            x, channels = f"{added}_relu", width * 4
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    graph = helper.make_graph(
        nodes, "resnet50_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2048])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def images_per_second(count: int, run) -> float:
    """Images per second of one timed ``run()``."""
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def measure(embedder: Embedder, paths: list[Path], repeats: int) -> dict[str, float]:
    """The four figures for one embedder over ``paths``: medians over ``repeats`` rounds.

    Each round times all four in turn, so a change in background load during the run
    (this machine is shared) affects every figure alike rather than skewing the ratios.
    """
    inputs = np.stack([embedder._prepare(p)[0] for p in paths])
    batches = [inputs[i : i + embedder.batch_size] for i in range(0, len(inputs), embedder.batch_size)]
    naive_session = ort.InferenceSession(str(embedder.model_path), providers=["CPUExecutionProvider"])
    input_name = naive_session.get_inputs()[0].name

    def naive_loop():
        for path in paths:
            with Image.open(path) as image:
                pixels = preprocess(image.convert("RGB"), embedder.preprocessing)
            naive_session.run(None, {input_name: pixels[None]})

    with ThreadPoolExecutor(embedder.decode_threads) as pool:
        stages = {
            "decode-only": lambda: list(pool.map(embedder._prepare, paths)),
            "model-only": lambda: [embedder._infer(b) for b in batches],
            "end-to-end": lambda: list(embedder.embed_paths(paths)),
            "naive loop": naive_loop,
        }
        rounds = [{name: images_per_second(len(paths), run) for name, run in stages.items()} for _ in range(repeats)]
    return {name: statistics.median(r[name] for r in rounds) for name in stages}


def report(name: str, embedder: Embedder, figures: dict[str, float]) -> str:
    """One markdown table row per embedder, with the two target ratios."""
    bound = min(figures["decode-only"], figures["model-only"])
    e2e = figures["end-to-end"]
    return (
        f"| {name} | {embedder.decode_threads}+{embedder.inference_threads} | {embedder.batch_size} | "
        + " | ".join(f"{figures[k]:.1f}" for k in ("decode-only", "model-only", "end-to-end", "naive loop"))
        + f" | {e2e / bound:.2f} | {e2e / figures['naive loop']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=240, help="photos for the classic model")
    parser.add_argument("--resnet-images", type=int, default=48, help="photos for the ResNet-50-sized model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="total threads (default: all cores)")
    args = parser.parse_args()

    print("| model | decode+inference threads | batch | decode-only | model-only | end-to-end | naive loop "
          "| end-to-end / min(decode, model) | end-to-end / naive |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        paths = write_photos(Path(folder), max(args.images, args.resnet_images))
        classic = Embedder("classic", threads=args.threads)
        print(report("classic", classic, measure(classic, paths[: args.images], args.repeats)), flush=True)
        resnet_path = Path(folder) / "resnet50_like.onnx"
        build_resnet50_like(resnet_path)
        resnet = Embedder(resnet_path, threads=args.threads, batch_size=16)
        print(report("ResNet-50-sized", resnet, measure(resnet, paths[: args.resnet_images], args.repeats)))


if __name__ == "__main__":
    main()
