"""Driving user ONNX models: layout, size, batch axis, sidecar, output, refusals."""

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnx")

from embed_fixtures import mean_colour_model  # noqa: E402
from fastretrieve import Embedder  # noqa: E402
from fastretrieve.embed import ModelError  # noqa: E402

PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1), pixel_scale=1.0)
SOLID = Image.new("RGB", (40, 30), (10, 20, 40))
EXPECTED = np.array([10, 20, 40], np.float32) / np.linalg.norm([10, 20, 40])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layout_is_read_from_the_model(tmp_path, layout):
    path = tmp_path / "mean.onnx"
    mean_colour_model(path, layout=layout)
    embedder = Embedder(path, **PLAIN)
    assert embedder.preprocessing.layout == layout and embedder.preprocessing.image_size == (8, 8)
    np.testing.assert_allclose(embedder.embed([SOLID]), [EXPECTED], atol=1e-6)


def test_channel_order_and_unnormalised_output(tmp_path):
    path = tmp_path / "mean.onnx"
    mean_colour_model(path)
    embedder = Embedder(path, channel_order="BGR", normalize=False, **PLAIN)
    np.testing.assert_allclose(embedder.embed([SOLID]), [[40, 20, 10]], atol=1e-4)


@pytest.mark.parametrize("fixed_batch", [1, 4])
def test_fixed_batch_axis_pads_the_last_batch(tmp_path, fixed_batch):
    path = tmp_path / "mean.onnx"
    mean_colour_model(path, batch=fixed_batch)
    embedder = Embedder(path, batch_size=64, **PLAIN)
    assert embedder.batch_size == fixed_batch
    colours = [(i * 20, 255 - i * 20, 7) for i in range(7)]
    vectors = embedder.embed([Image.new("RGB", (9, 9), c) for c in colours])
    expected = np.array(colours, np.float32)
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_sidecar_supplies_preprocessing_and_arguments_win(tmp_path):
    path = tmp_path / "mean.onnx"
    mean_colour_model(path, size="height")
    with pytest.raises(ModelError, match="image_size"):
        Embedder(path)
    path.with_suffix(".json").write_text(json.dumps({"image_size": 16, "channel_order": "BGR", **PLAIN}))
    from_sidecar = Embedder(path)
    assert from_sidecar.preprocessing.image_size == (16, 16)
    np.testing.assert_allclose(from_sidecar.embed([SOLID]), [EXPECTED[::-1]], atol=1e-6)
    overridden = Embedder(path, channel_order="RGB")
    np.testing.assert_allclose(overridden.embed([SOLID]), [EXPECTED], atol=1e-6)
    assert overridden.fingerprint != from_sidecar.fingerprint


def test_float16_input_model(tmp_path):
    path = tmp_path / "half.onnx"
    mean_colour_model(path, input_type="float16")
    np.testing.assert_allclose(Embedder(path, **PLAIN).embed([SOLID]), [EXPECTED], atol=1e-3)


def test_unknown_sidecar_key_is_refused(tmp_path):
    path = tmp_path / "mean.onnx"
    mean_colour_model(path)
    path.with_suffix(".json").write_text(json.dumps({"resize": 256}))
    with pytest.raises(ModelError, match="unknown keys"):
        Embedder(path)


def _write_model(path, inputs, outputs, nodes):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "odd", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_models_it_cannot_drive_are_refused_with_the_reason(tmp_path):
    from onnx import TensorProto, helper

    def tensor(name, element, shape):
        return helper.make_tensor_value_info(name, element, shape)

    cases = {
        "two_inputs": ([tensor("a", TensorProto.FLOAT, [1, 3, 8, 8]), tensor("b", TensorProto.FLOAT, [1, 3, 8, 8])],
                       [helper.make_node("Add", ["a", "b"], ["y"])], "exactly one"),
        "int_input": ([tensor("a", TensorProto.INT64, [1, 3, 8, 8])],
                      [helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT)], "float"),
        "not_an_image": ([tensor("a", TensorProto.FLOAT, [1, 64])],
                         [helper.make_node("Identity", ["a"], ["y"])], "4-D"),
        "no_channel_axis": ([tensor("a", TensorProto.FLOAT, ["n", "c", "h", "w"])],
                            [helper.make_node("Identity", ["a"], ["y"])], "layout="),
    }
    for name, (inputs, nodes, reason) in cases.items():
        path = tmp_path / f"{name}.onnx"
        _write_model(path, inputs, [tensor("y", TensorProto.FLOAT, None)], nodes)
        with pytest.raises(ModelError, match=reason):
            Embedder(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        Embedder(garbage)


def test_output_is_chosen_by_name(tmp_path):
    path = tmp_path / "mean.onnx"
    mean_colour_model(path)
    with pytest.raises(ModelError, match="no output 'logits'"):
        Embedder(path, output="logits")
    assert Embedder(path, output="features").dim == 3
