"""Keras .h5 -> PyTorch converter: logits equivalence on random-weight fixtures, negative controls, refusals.

The fixtures are real Keras models (TensorFlow 2.15, built in a subprocess by tests/keras_fixtures/make_fixtures.py)
with every constant tensor randomised; the reference logits come from TensorFlow on the reloaded file.
"""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from keras_fixtures import fixture_dir

from harmonized_models.architectures.caffe_resnet50 import caffe_resnet50
from harmonized_models.keras import KerasFormatError, UnmappedTensorsError, read_h5
from harmonized_models.keras.convert import (build_network, convert_h5_model, convert_keras, flatten_dense_as_conv,
                                             load_converted)

# fixture -> converter arch
ARCH_OF = {
    "vgg16": "vgg16",
    "resnet50_caffe": "resnet50",
    "resnet50_keras": "resnet50",
    "efficientnet_b0": "efficientnet_b0",
    "efficientnet_b0_qubvel": "efficientnet_b0",
    "vit_b16": "vit_b16",
}
TOL = 1e-4  # max |torch - keras| <= TOL * keras logit range (the criterion)


@pytest.fixture(scope="session")
def keras_dir():
    return fixture_dir(list(ARCH_OF))


def logits(net: torch.nn.Module, npz) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(npz["inputs"].transpose(0, 3, 1, 2)))
    with torch.inference_mode():
        return net(x).numpy()


def rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    """max |torch - keras| as a fraction of the Keras logit range (max - min over all images and classes)."""
    return float(np.abs(y - ref).max() / (ref.max() - ref.min()))


def rel_error_centred(y: np.ndarray, ref: np.ndarray) -> float:
    """Error on the image-dependent part of the logits (each image minus the batch mean).

    Random-weight networks give every image similar logits, so a bug in how the input is handled can hide
    below the overall tolerance; this part has to be reproduced to 1 % of its own size.
    """
    return rel_error(y - y.mean(0), ref - ref.mean(0))


@pytest.mark.parametrize("fixture", list(ARCH_OF))
def test_converted_logits_match_keras(keras_dir, fixture, tmp_path):
    out = tmp_path / f"{fixture}.safetensors"
    report = convert_keras(keras_dir / f"{fixture}.h5", ARCH_OF[fixture], out)
    assert report["tensors_mapped"] == report["tensors_in_file"] == read_h5(keras_dir / f"{fixture}.h5").n_tensors
    assert out.exists() and not list(tmp_path.glob("*.partial"))
    net = load_converted(out)  # rebuilt from the safetensors metadata alone
    ref = np.load(keras_dir / f"{fixture}.npz")
    y = logits(net, ref)
    assert y.shape == ref["logits"].shape
    assert rel_error(y, ref["logits"]) <= TOL
    assert rel_error_centred(y, ref["logits"]) <= 1e-2


def test_structure_is_read_from_the_file(keras_dir):
    caffe = read_h5(keras_dir / "resnet50_caffe.h5")
    _, cfg, _ = convert_h5_model(caffe, "resnet50")
    assert cfg == {"naming": "caffe", "eps": 1e-3, "stride_in_1x1": True, "maxpool_padding": 1, "num_classes": 1000}
    tf2 = read_h5(keras_dir / "resnet50_keras.h5")
    _, cfg, _ = convert_h5_model(tf2, "resnet50")
    assert cfg["naming"] == "keras" and cfg["eps"] == pytest.approx(1.001e-5)
    eff = read_h5(keras_dir / "efficientnet_b0.h5")
    _, cfg, _ = convert_h5_model(eff, "efficientnet_b0")
    assert cfg["input_layers"] == ["rescaling", "normalization", "rescaling_1"]
    # Rescaling(1/255) -> Normalization(file mean/var) -> Rescaling(1/sqrt(ImageNet std)) folded into a*x + b
    norm = eff.layer("normalization")
    mean = norm.weights["mean"].reshape(-1)
    std = np.sqrt(norm.weights["variance"].reshape(-1))
    scale2 = np.asarray(eff.layer("rescaling_1").config["scale"])
    np.testing.assert_allclose(cfg["input_scale"], scale2 / (255 * std), rtol=1e-6)
    np.testing.assert_allclose(cfg["input_offset"], -mean / std * scale2, rtol=1e-6)
    qub = read_h5(keras_dir / "efficientnet_b0_qubvel.h5")
    _, cfg, _ = convert_h5_model(qub, "efficientnet_b0")
    assert cfg["input_layers"] == [] and cfg["input_scale"] == [1.0, 1.0, 1.0]


def test_negative_control_stride_on_3x3_fails_tolerance(keras_dir):
    """torchvision's v1.5 stride placement with the same weights: top-1 may agree, the logits must not."""
    module, cfg, state = convert_h5_model(read_h5(keras_dir / "resnet50_caffe.h5"), "resnet50")
    ref = np.load(keras_dir / "resnet50_caffe.npz")
    assert rel_error(logits(module, ref), ref["logits"]) <= TOL
    wrong = caffe_resnet50(cfg["num_classes"], cfg["eps"], stride_in_1x1=False)
    wrong.load_state_dict(state)
    assert rel_error(logits(wrong, ref), ref["logits"]) > 100 * TOL


def test_negative_control_efficientnet_without_input_layers_fails(keras_dir):
    module, cfg, state = convert_h5_model(read_h5(keras_dir / "efficientnet_b0.h5"), "efficientnet_b0")
    ref = np.load(keras_dir / "efficientnet_b0.npz")
    wrong = build_network("efficientnet_b0", {**cfg, "input_scale": [1 / 255] * 3, "input_offset": [0.0] * 3})
    state = {k: v for k, v in state.items() if not k.startswith("input_affine.")}
    wrong.load_state_dict(state, strict=False)
    y = logits(wrong, ref)
    assert rel_error(y, ref["logits"]) > 10 * TOL and rel_error_centred(y, ref["logits"]) > 0.1


def test_flatten_order_nhwc_to_nchw():
    """Hand-sized case: Keras Dense over Flatten(NHWC) == conv over the NCHW map with the re-laid kernel."""
    rng = np.random.default_rng(0)
    h, w, c, n_out = 2, 3, 4, 5
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    kernel = rng.normal(size=(h * w * c, n_out)).astype(np.float32)
    keras_out = x.reshape(-1) @ kernel  # Keras: flatten channels-last
    conv = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(2, 0, 1))[None],
                                      torch.from_numpy(flatten_dense_as_conv(kernel, h, w, c)))
    np.testing.assert_allclose(conv.numpy().reshape(-1), keras_out, rtol=1e-5, atol=1e-5)
    # the naive channels-first reading of the same kernel gives a different answer
    naive = np.ascontiguousarray(kernel.reshape(c, h, w, n_out).transpose(3, 0, 1, 2))
    bad = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(2, 0, 1))[None], torch.from_numpy(naive))
    assert np.abs(bad.numpy().reshape(-1) - keras_out).max() > 0.1


# ------------------------------------------------------------------------------------------------ refusals
def _copy(keras_dir, tmp_path, name="efficientnet_b0_qubvel"):
    dst = tmp_path / f"{name}.h5"
    shutil.copy(keras_dir / f"{name}.h5", dst)
    return dst


def test_extra_tensor_is_refused_and_nothing_written(keras_dir, tmp_path):
    path = _copy(keras_dir, tmp_path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/stem_conv"]
        group.create_dataset("stem_conv/extra_scale:0", data=np.ones(32, np.float32))
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        group.attrs["weight_names"] = np.array(names + ["stem_conv/extra_scale:0"], dtype=h5py.string_dtype())
    out = tmp_path / "out" / "x.safetensors"
    with pytest.raises(UnmappedTensorsError, match="stem_conv/extra_scale"):
        convert_keras(path, "efficientnet_b0", out)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_missing_tensor_is_refused(keras_dir, tmp_path):
    path = _copy(keras_dir, tmp_path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/top_bn"]
        del group["top_bn/moving_variance:0"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        group.attrs["weight_names"] = np.array([n for n in names if "moving_variance" not in n],
                                               dtype=h5py.string_dtype())
    out = tmp_path / "x.safetensors"
    with pytest.raises(KerasFormatError, match="top_bn.*moving_variance"):
        convert_keras(path, "efficientnet_b0", out)
    assert not out.exists()


def test_wrong_arch_and_non_keras_files_are_refused(keras_dir, tmp_path):
    with pytest.raises(KerasFormatError, match="not a vit-keras ViT"):
        convert_keras(keras_dir / "efficientnet_b0_qubvel.h5", "vit_b16", tmp_path / "x.safetensors")
    with pytest.raises(KerasFormatError, match="not a Keras ResNet50"):
        convert_keras(keras_dir / "efficientnet_b0_qubvel.h5", "resnet50", tmp_path / "x.safetensors")
    with pytest.raises(KeyError, match="unknown Keras arch"):
        convert_keras(keras_dir / "efficientnet_b0_qubvel.h5", "resnet51", tmp_path / "x.safetensors")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(KerasFormatError, match="not an HDF5 file"):
        convert_keras(junk, "vgg16", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_bytes_attributes_and_optimizer_state_are_handled(keras_dir, tmp_path):
    """Old Keras / h5py 2 files store fixed-length bytes attrs; compiled models add optimizer state: same result."""
    path = _copy(keras_dir, tmp_path)
    with h5py.File(path, "r+") as f:
        for obj in [f, f["model_weights"], *[f["model_weights"][k] for k in f["model_weights"]]]:
            # (model_config stays str: as fixed-length bytes it exceeds the 64 KiB compact attribute limit; the
            #  bytes model_config case is covered by the hand-written file below)
            for key in ("layer_names", "weight_names", "keras_version", "backend"):
                if key in obj.attrs:
                    value = obj.attrs[key]
                    if isinstance(value, str):
                        obj.attrs[key] = np.bytes_(value.encode())
                    elif len(value):
                        obj.attrs[key] = np.array([v.encode() if isinstance(v, str) else v for v in value],
                                                  dtype="S")
        f.attrs["training_config"] = np.bytes_(json.dumps({"loss": "categorical_crossentropy"}).encode())
        f.create_dataset("optimizer_weights/SGD/iteration:0", data=np.int64(3))
        f.create_dataset("optimizer_weights/SGD/m/stem_conv/kernel:0", data=np.zeros((3, 3, 3, 32), np.float32))
    with h5py.File(path, "r") as f:
        assert isinstance(f.attrs["keras_version"], bytes)
        assert f["model_weights"].attrs["layer_names"].dtype.kind == "S"
    h5 = read_h5(path)
    assert h5.keras_version == "2.15.0" and h5.name == "efficientnet-b0"
    _, _, state = convert_h5_model(h5, "efficientnet_b0")
    _, _, ref_state = convert_h5_model(read_h5(keras_dir / "efficientnet_b0_qubvel.h5"), "efficientnet_b0")
    assert state.keys() == ref_state.keys()
    assert all(torch.equal(state[k], ref_state[k]) for k in state)


# ------------------------------------------------------------------------------------------------ reader
def _tiny_h5(path, bytes_attrs=False):
    """A hand-written two-layer Keras-style file: a depthwise conv and a Dense with a nested custom scope."""
    enc = (lambda s: np.bytes_(s.encode())) if bytes_attrs else (lambda s: s)
    cfg = {"class_name": "Functional", "config": {"name": "tiny", "layers": [
        {"class_name": "InputLayer", "name": "in", "config": {"name": "in"}, "inbound_nodes": []},
        {"class_name": "DepthwiseConv2D", "name": "dw", "config": {"name": "dw"},
         "inbound_nodes": [[["in", 0, 0, {}]]]},
        {"class_name": "Custom>Block", "name": "Enc/block_0", "config": {"name": "Enc/block_0"},
         "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__",
                                      "config": {"keras_history": ["dw", 0, 0]}}], "kwargs": {}}]}]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = enc(json.dumps(cfg))
        mw = f.create_group("model_weights")
        layer_names = ["in", "dw", "Enc/block_0"]
        mw.attrs["layer_names"] = (np.array([n.encode() for n in layer_names], dtype="S") if bytes_attrs
                                   else np.array(layer_names, dtype=h5py.string_dtype()))
        mw.create_group("in").attrs["weight_names"] = np.array([], dtype="S1")
        dw = mw.create_group("dw")
        dw.create_dataset("dw/depthwise_kernel:0", data=np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1))
        dw.create_dataset("dw/bias:0", data=np.ones(2, np.float32))
        dw.attrs["weight_names"] = np.array(["dw/depthwise_kernel:0", "dw/bias:0"], dtype="S")
        blk = mw.create_group("Enc/block_0")
        names = ["Enc_block_0/Mlp/Enc_block_0_Dense_0/kernel", "Enc/block_0/query/kernel:0"]
        blk.create_dataset(names[0], data=np.zeros((4, 8), np.float32))
        blk.create_dataset(names[1], data=np.ones((4, 4), np.float32))
        blk.attrs["weight_names"] = np.array(names, dtype="S")
    return path


@pytest.mark.parametrize("bytes_attrs", [False, True])
def test_reader_names_suffixes_and_tracking(tmp_path, bytes_attrs):
    h5 = read_h5(_tiny_h5(tmp_path / "tiny.h5", bytes_attrs))
    assert [layer.name for layer in h5.layers] == ["in", "dw", "Enc/block_0"]
    assert h5.layer("Enc/block_0").inbound == ["dw"] and h5.layer("dw").inbound == ["in"]
    assert h5.layer("Enc/block_0").base_class == "Block" and h5.n_tensors == 4
    dw = h5.layer("dw")
    assert dw.find("kernel") == []  # 'kernel' is not 'depthwise_kernel'
    assert h5.take("dw", "depthwise_kernel", (2, 2, 2, 1)).sum() == 28
    with pytest.raises(KerasFormatError, match=r"dataset 'dw/bias' declares shape \(2,\) but the architecture "
                                               r"expects \(3,\)"):
        h5.take("dw", "bias", (3,))
    with pytest.raises(KerasFormatError, match="no weight matching 'gamma' with shape"):
        h5.take("dw", "gamma", (3,))
    # Keras 3 style flattened scope found by suffix; TF 2 style by path components
    assert h5.take("Enc/block_0", "Dense_0/kernel", (4, 8)).shape == (4, 8)
    assert h5.take("Enc/block_0", "query/kernel").shape == (4, 4)
    assert h5.unused() == ["dw/bias"]
    with pytest.raises(KerasFormatError, match="close: dw"):
        h5.layer("dww")


@pytest.mark.parametrize("function", ["math.multiply", "math.truediv"])
def test_input_scaling_written_as_tf_op_lambda(keras_dir, tmp_path, function):
    """tf_keras 2.16+ writes EfficientNet's ``rescaling_1`` as ``tf.math.multiply`` (TF 2.9: ``truediv``) with the
    constant in the inbound node's kwargs; the converter reads it from there and gives the same network."""
    path = _copy(keras_dir, tmp_path, "efficientnet_b0")
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        layers = cfg["config"]["layers"]
        i = next(k for k, layer in enumerate(layers) if layer["name"] == "rescaling_1")
        scale = np.asarray(layers[i]["config"]["scale"])
        y = scale if function == "math.multiply" else 1.0 / scale
        name = f"tf.{function}"
        layers[i] = {"class_name": "TFOpLambda", "name": name,
                     "config": {"name": name, "trainable": True, "dtype": "float32", "function": function},
                     "inbound_nodes": [["normalization", 0, 0, {"y": y.reshape(1, 1, 1, 3).tolist(), "name": None}]]}
        for layer in layers:
            for node in layer["inbound_nodes"]:
                for entry in node:
                    if isinstance(entry, list) and entry[0] == "rescaling_1":
                        entry[0] = name
        f.attrs["model_config"] = json.dumps(cfg)
    module, cfg_out, _ = convert_h5_model(read_h5(path), "efficientnet_b0")
    assert cfg_out["input_layers"] == ["rescaling", "normalization", name]
    ref = np.load(keras_dir / "efficientnet_b0.npz")
    assert rel_error(logits(module, ref), ref["logits"]) <= TOL


def test_structure_mismatch_is_refused_not_silently_converted(keras_dir, tmp_path, monkeypatch):
    """A torch module whose stride placement disagrees with the file's layer configs is refused by the per-layer
    stride/padding check, even though every tensor shape fits."""
    import dataclasses

    from harmonized_models.keras import convert

    spec = convert.ARCHS["resnet50"]
    v15 = dataclasses.replace(spec, configure=lambda h5: {**spec.configure(h5), "stride_in_1x1": False})
    monkeypatch.setitem(convert.ARCHS, "resnet50", v15)
    out = tmp_path / "x.safetensors"
    with pytest.raises(KerasFormatError, match=r"res3a_branch2a.*strides \[?\(?2, 2"):
        convert_keras(keras_dir / "resnet50_caffe.h5", "resnet50", out)
    assert not out.exists()
