"""The int8 variant of a built-in CNN: static QDQ quantisation with bias correction.

``onnxruntime.quantization.quantize_static`` turns the fp32 graph into a QDQ graph --
int8 weights per output channel, uint8 activations per tensor, ranges calibrated at the
99.999th percentile -- which ONNX Runtime runs with its int8 kernels. Calibration images are the sample photos fastretrieve ships, edited (mirror image,
crops, grayscale, a 25-pixel grayscale crop, an eighth-size copy, a low-contrast copy),
plus blurred noise generated from a fixed seed: nothing is downloaded.

Plain static quantisation kept mAP but not the vectors (median cosine to fp32 0.90 on
small grayscale pictures, minimum 0.60). The loss came mostly from the weights: rounding
them to int8 shifts each output channel's mean by ``(W_int8 - W) * E[input]``; most
convolutions read ReLU6 outputs, never negative, so the errors do not average out, and
the shifts add up through the blocks. Bias correction
(Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", 2019) subtracts it from each convolution's int32 bias, with ``E[input]``
measured on the calibration images in the fp32 graph. Measured in
benchmarks/explore_int8.py (BENCHMARKS.md).

Needs ``onnx`` and ``onnxruntime.quantization`` (part of ``onnxruntime``); only
:func:`quantize_model` imports the latter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .model import Preprocessing
from .preprocess import preprocess

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# Activation ranges: the 99.999th percentile of the calibration values, not the extremes
# (measured against MinMax, Entropy, moving-average MinMax and 99.99 / 99.9999 %).
CALIBRATION_PERCENTILE = 99.999
NOISE_IMAGES = 8
NOISE_SEED = 0
# Calibration runs at most this many images at a time: the calibrator holds every intermediate
# tensor of the images it is given (about 60 MB an image for Lite0), so all 96 at once
# peaked at 6 GB.
CALIBRATION_CHUNK = 8


def calibration_images(samples: Path = SAMPLES) -> list[Image.Image]:
    """The calibration set: each shipped sample photo as it is and edited towards what a
    collection holds (mirrored, cropped, gray, tiny, small, faded), then smooth noise."""
    paths = sorted(samples.rglob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no sample photos to calibrate on in {samples}")
    images = []
    for path in paths:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        w, h = image.size
        gray = ImageOps.grayscale(image).convert("RGB")
        tiny = gray.crop((w // 4, h // 4, w * 3 // 4, h * 3 // 4)).resize((25, 25), Image.Resampling.BILINEAR)
        images += [
            image,
            ImageOps.mirror(image),
            image.crop((0, 0, w * 2 // 3, h * 2 // 3)),
            image.crop((w // 3, h // 3, w, h)),
            gray,
            tiny,
            image.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.BILINEAR),
            Image.blend(image, Image.new("RGB", image.size, (128, 128, 128)), 0.6),
        ]
    rng = np.random.default_rng(NOISE_SEED)
    for number in range(NOISE_IMAGES):
        noise = rng.uniform(0, 255, (16, 16, 3 if number % 2 else 1)).astype(np.uint8)
        image = Image.fromarray(noise.squeeze()).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        images.append(image.filter(ImageFilter.GaussianBlur(number)))
    return images


def conv_input_means(model, feed: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The mean over the calibration ``feed`` of every convolution's input map (channels,
    height, width) in the fp32 ``model``, keyed by the convolution's node name."""
    import onnx
    import onnxruntime as ort

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    for node in convs:
        augmented.graph.output.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(augmented.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [node.input[0] for node in convs]
    sums = [np.zeros(1)] * len(names)
    count = 0
    for item in feed:
        outputs = session.run(names, item)
        sums = [total + output.astype(np.float64).sum(axis=0) for total, output in zip(sums, outputs)]
        count += len(outputs[0])
    return {node.name: total / count for node, total in zip(convs, sums)}


def _mean_output_shift(conv, error: np.ndarray, mean_map: np.ndarray) -> np.ndarray:
    """Per output channel, the mean over positions of ``conv`` with weights ``error`` and
    no bias applied to ``mean_map``: by linearity, the mean shift the weight error causes,
    borders included (padding makes a small map's edges see fewer inputs)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    node = helper.make_node("Conv", ["x", "w"], ["y"])
    node.attribute.extend(conv.attribute)
    graph = helper.make_graph([node], "shift", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(error.astype(np.float32), "w")])
    shift_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    shift_model.ir_version = 8
    session = ort.InferenceSession(shift_model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": mean_map[None].astype(np.float32)})[0].astype(np.float64).mean(axis=(0, 2, 3))


def correct_biases(quantized, model, means: dict[str, np.ndarray]) -> int:
    """Bias correction, in place: for each quantised convolution of the QDQ graph
    ``quantized``, subtract the mean shift of its output that rounding the weights causes,
    ``(W_int8 - W) * E[input]`` averaged over positions, from its int32 bias (``W`` from
    the fp32 ``model``, ``E[input]`` from ``means``, :func:`conv_input_means`). Returns
    how many convolutions were corrected."""
    from onnx import numpy_helper

    original = {tensor.name: numpy_helper.to_array(tensor).astype(np.float64) for tensor in model.graph.initializer}
    stored = {tensor.name: tensor for tensor in quantized.graph.initializer}
    producer = {output: node for node in quantized.graph.node for output in node.output}
    float_convs = {node.name: node for node in model.graph.node if node.op_type == "Conv"}

    def quantized_constant(tensor):
        """(initializer name, integer values, scale) behind a DequantizeLinear of a constant."""
        node = producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in stored:
            return None
        return (node.input[0], numpy_helper.to_array(stored[node.input[0]]).astype(np.float64),
                numpy_helper.to_array(stored[node.input[1]]).astype(np.float64))

    corrected = 0
    for node in quantized.graph.node:
        if node.op_type != "Conv" or node.name not in float_convs or len(node.input) < 3:
            continue
        weight, bias = quantized_constant(node.input[1]), quantized_constant(node.input[2])
        if weight is None or bias is None:
            continue  # left in float: nothing was rounded
        source = float_convs[node.name]
        _, weight_int, weight_scale = weight
        bias_name, bias_int, bias_scale = bias
        error = weight_int * weight_scale.reshape(-1, *[1] * (weight_int.ndim - 1)) - original[source.input[1]]
        shift = _mean_output_shift(source, error, means[node.name])
        values = np.round((bias_int * bias_scale - shift) / bias_scale)
        info = np.iinfo(np.int32)
        stored[bias_name].CopyFrom(numpy_helper.from_array(np.clip(values, info.min, info.max).astype(np.int32),
                                                           bias_name))
        corrected += 1
    return corrected


def quantize_model(fp32_path: Path, preprocessing: Preprocessing, input_name: str = "image") -> bytes:
    """The serialised int8 QDQ graph of the fp32 ONNX model at ``fp32_path``, calibrated on
    :func:`calibration_images` prepared with ``preprocessing``, biases corrected."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    feed = [{input_name: preprocess(image, preprocessing)[None]} for image in calibration_images()]

    class Feed(CalibrationDataReader):
        """The calibration inputs, in the chunks quantize_static asks for (set_range)."""

        def __init__(self):
            self.items = iter(feed)

        def __len__(self):
            return len(feed)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.items = iter(feed[start_index:end_index])

        def get_next(self):
            return next(self.items, None)

    # quantize_static needs chunks of one size that divides the count (96 with the shipped samples).
    chunk = max(size for size in range(1, CALIBRATION_CHUNK + 1) if len(feed) % size == 0)

    with tempfile.TemporaryDirectory(prefix="fastretrieve-int8-") as folder, _quiet_quantizer():
        target = Path(folder) / "int8.onnx"
        quantize_static(str(fp32_path), str(target), Feed(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": CALIBRATION_PERCENTILE,
                                       "CalibStridedMinMax": chunk})
        quantized = onnx.load(target)
    model = onnx.load(fp32_path)
    correct_biases(quantized, model, conv_input_means(model, feed))
    return quantized.SerializeToString(deterministic=True)


class _QuantizerMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname.replace("\\", "/")


@contextlib.contextmanager
def _quiet_quantizer():
    """Keep the quantiser's progress prints (stdout) and its advice, logged on the root
    logger, out of a command's output: this runs once, inside `fastretrieve index`."""
    quiet = _QuantizerMessages()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(quiet)
