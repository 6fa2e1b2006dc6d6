"""Static int8 quantisation of the built-in efficientnet-lite0: which variant keeps quality?

For each variant -- what is left in float (depthwise convolutions, stem, head), the
activation type and symmetry, per-channel or per-tensor weights, QDQ or QOperator, the
calibration method and the calibration images, with or without bias correction ("bc-":
fastretrieve.embed.static_int8.correct_biases) -- it quantises the fp32 graph with
``onnxruntime.quantization.quantize_static`` and reports, on the "views" labelled folder
(benchmarks/make_labelled_folder.py: 90 crops of 15 scikit-image photos, 120 LFW 25-px
grayscale patches):

- cosine of the int8 vector to the fp32 vector of the same image: minimum, 1st percentile
  and median, over the photos and over the LFW patches;
- mAP@10 / recall@1 / precision@10 leave-one-out, as ``fastretrieve evaluate`` computes it
  (no whitening), next to fp32's;
- the model alone at batch 16 (views images), images/s, median of ``--repeats`` runs, and
  its ratio to fp32 measured in the same run (the two timed in turns).

Calibration images come only from what fastretrieve ships (src/fastretrieve/samples) or
are generated; the LFW patches are never calibrated on. Run from the repository root:

    PYTHONPATH=tests python benchmarks/make_labelled_folder.py /tmp/views
    python benchmarks/explore_int8.py /tmp/views [--variants NAME ...] [--repeats 15] [--unoptimised]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageOps

from fastretrieve.cli.evaluation import retrieval_metrics
from fastretrieve.embed import builtin
from fastretrieve.embed.builtin import builtin_model_path
from fastretrieve.embed.decode import load_rgb
from fastretrieve.embed.model import Preprocessing
from fastretrieve.embed.preprocess import preprocess
from fastretrieve.embed.static_int8 import (SAMPLES, calibration_images, conv_input_means, correct_biases,
                                            quantize_model)
from fastretrieve._backend import default_threads

K = 10


def settings() -> Preprocessing:
    """The built-in CNN's preprocessing, as its sidecar gives it to the Embedder."""
    size = builtin.BUILTIN_MODELS["efficientnet-lite0"].image_size
    return Preprocessing((size, size), **builtin.preprocessing_settings())


def sample_photos() -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted(SAMPLES.rglob("*.jpg"))]


def calibration_set(kind: str) -> list[Image.Image]:
    """Calibration images: "photos" is the earlier attempt's set (the sample photos, their
    mirror images and two crops); "varied" is what the shipped int8 model calibrates on
    (fastretrieve.embed.static_int8.calibration_images: those plus grayscale, tiny,
    small and faded copies and generated smooth noise)."""
    if kind == "varied":
        return calibration_images()
    images = []
    for image in sample_photos():
        w, h = image.size
        images += [image, ImageOps.mirror(image), image.crop((0, 0, w * 2 // 3, h * 2 // 3)),
                   image.crop((w // 3, h // 3, w, h))]
    return images


def views(folder: Path) -> tuple[list[Path], np.ndarray]:
    paths = sorted(folder.rglob("*.jpg"))
    return paths, np.array([path.parent.name for path in paths])


def session(path, threads=None, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed(sess, inputs: np.ndarray) -> np.ndarray:
    vectors = np.concatenate([sess.run(None, {"image": inputs[i:i + 32]})[0] for i in range(0, len(inputs), 32)])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def paired_rates(sessions, batch: np.ndarray, repeats: int) -> list[float]:
    """Images/s of each session on ``batch``, median of ``repeats`` runs taken in turns
    (one run of each, again and again), so that a load change on the shared machine
    hits every session alike."""
    times = [[] for _ in sessions]
    for sess in sessions:
        sess.run(None, {"image": batch})
    for _ in range(repeats):
        for sess, taken in zip(sessions, times):
            start = time.perf_counter()
            sess.run(None, {"image": batch})
            taken.append(time.perf_counter() - start)
    return [len(batch) / float(np.median(taken)) for taken in times]


def quality(vectors: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :K]
    metrics = retrieval_metrics(labels, neighbours, K)
    return {name: float(np.nanmean(values)) for name, values in metrics.items()}


def node_names(model, pattern) -> list[str]:
    return [node.name for node in model.graph.node if pattern(node)]


def is_depthwise(node) -> bool:
    return node.op_type == "Conv" and node.name.endswith("_depthwise_conv")


# name -> (quantize_static keyword arguments, nodes kept in float, calibration set, bias correction)
def variants(model) -> dict[str, tuple[dict, list[str], str, bool]]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    qdq = dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
               per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    depthwise = node_names(model, is_depthwise) + node_names(model, lambda n: n.name.endswith("_depthwise_conv.relu6"))
    stem = ["_conv_stem", "_conv_stem.relu6"]
    ends = stem + ["_conv_head", "_conv_head.relu6", "pooled", "embedding"]
    adds = node_names(model, lambda n: n.op_type == "Add")
    symmetric = {**qdq, "activation_type": QuantType.QInt8, "extra_options": {"ActivationSymmetric": True}}
    percentile = {**qdq, "calibrate_method": CalibrationMethod.Percentile, "extra_options": {"CalibPercentile": 99.999}}
    return {
        "baseline": (qdq, [], "photos", False),
        # diagnostics: which half of int8 loses the vectors? (16-bit Q/DQ run in float: slow)
        "16-bit-activations": ({**qdq, "activation_type": QuantType.QUInt16,
                                "extra_options": {"UseQDQContribOps": True}}, [], "photos", False),
        "16-bit-weights": ({**qdq, "weight_type": QuantType.QInt16,
                            "extra_options": {"UseQDQContribOps": True}}, [], "photos", False),
        "varied-calib": (qdq, [], "varied", False),
        "s8-symmetric": (symmetric, [], "varied", False),
        "per-tensor": ({**qdq, "per_channel": False}, [], "varied", False),
        "qoperator": ({**qdq, "quant_format": QuantFormat.QOperator}, [], "varied", False),
        "percentile": (percentile, [], "varied", False),
        "float-ends": (qdq, ends, "varied", False),
        "float-adds": (qdq, adds, "varied", False),
        "float-depthwise": (qdq, depthwise, "varied", False),
        "float-depthwise-ends-adds": (qdq, depthwise + ends + adds, "varied", False),
        "bc": (qdq, [], "varied", True),
        "bc-photos": (qdq, [], "photos", True),
        "bc-percentile": (percentile, [], "varied", True),
        "bc-s8-symmetric": (symmetric, [], "varied", True),
        "bc-float-stem": (qdq, stem, "varied", True),
        "bc-float-depthwise": (qdq, depthwise, "varied", True),
        "bc-percentile-float-stem": (percentile, stem, "varied", True),
        "bc-percentile-99.99": ({**percentile, "extra_options": {"CalibPercentile": 99.99}}, [], "varied", True),
        "bc-percentile-99.9999": ({**percentile, "extra_options": {"CalibPercentile": 99.9999}}, [], "varied", True),
        "bc-percentile-photos": (percentile, [], "photos", True),
        "bc-entropy": ({**qdq, "calibrate_method": CalibrationMethod.Entropy}, [], "varied", True),
        "bc-moving-average": ({**qdq, "extra_options": {"CalibMovingAverage": True}}, [], "varied", True),
        "bc-percentile-float-ends": (percentile, ends, "varied", True),
        "bc-percentile-two-sided": ({**percentile, "extra_options": {"CalibPercentile": 99.999,
                                                                    "CalibTensorRangeSymmetric": False}},
                                    [], "varied", True),
        # what Embedder("efficientnet-lite0-int8") builds: bc-percentile, calibrated in chunks of 8
        "shipped": None,
    }


def quantize(fp32: Path, target: Path, kwargs: dict, exclude: list[str], images, prep,
             bias_correction: bool = False) -> None:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    feed = [preprocess(image, prep)[None] for image in images]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feed)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"image": item}

    quantize_static(str(fp32), str(target), Reader(), nodes_to_exclude=exclude, **kwargs)
    if bias_correction:
        model = onnx.load(fp32)
        quantized = onnx.load(target)
        correct_biases(quantized, model, conv_input_means(model, [{"image": item} for item in feed]))
        onnx.save(quantized, target)


def cosine_summary(cosine: np.ndarray) -> str:
    return f"{cosine.min():.3f} / {np.percentile(cosine, 1):.3f} / {np.median(cosine):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("views", type=Path)
    parser.add_argument("--variants", nargs="*")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--unoptimised", action="store_true",
                        help="run the int8 graphs without ONNX Runtime's graph optimisations: Q/DQ as "
                             "written, in float, which tells quantisation error from kernel behaviour")
    args = parser.parse_args()
    level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL if args.unoptimised else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    prep = settings()
    fp32 = builtin_model_path("efficientnet-lite0")
    model = onnx.load(fp32)
    chosen = variants(model)
    names = args.variants or list(chosen)

    paths, labels = views(args.views)
    inputs = np.stack([preprocess(load_rgb(path, max_pixels=10**8), prep) for path in paths])
    lfw = np.array([int(label[5:]) >= 15 for label in labels])  # class0015: faces, 1000+: patches
    batch = inputs[np.random.default_rng(0).permutation(len(inputs))[:16]]
    reference_session = session(fp32)
    reference = embed(reference_session, inputs)
    base = quality(reference, labels)
    print(f"ONNX Runtime {ort.__version__}, {default_threads()} threads; machine shared with other engineers")
    print(f"fp32: mAP@10 {base['map@10']:.3f}, recall@1 {base['recall@1']:.3f}, P@10 {base['precision@10']:.3f}")
    print("| variant | float nodes | photos cos min / p1 / median | LFW cos min / p1 / median | mAP@10 | recall@1 "
          "| P@10 | int8 img/s | fp32 img/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    calibration = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            target = Path(folder) / f"{name}.onnx"
            if chosen[name] is None:
                kwargs, exclude = {}, []
                target.write_bytes(quantize_model(fp32, prep))
            else:
                kwargs, exclude, calib, bias_correction = chosen[name]
                images = calibration.setdefault(calib, calibration_set(calib))
                quantize(fp32, target, kwargs, exclude, images, prep, bias_correction)
            quantized = session(target, level=level)
            vectors = embed(quantized, inputs)
            cosine = np.einsum("ij,ij->i", vectors, reference)
            scores = quality(vectors, labels)
            int8_rate, fp32_rate = paired_rates([quantized, reference_session], batch, args.repeats)
            print(f"| {name} | {len(exclude)} | {cosine_summary(cosine[~lfw])} | {cosine_summary(cosine[lfw])} "
                  f"| {scores['map@10']:.3f} | {scores['recall@1']:.3f} | {scores['precision@10']:.3f} "
                  f"| {int8_rate:.0f} | {fp32_rate:.0f} | {int8_rate / fp32_rate:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
