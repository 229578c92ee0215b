"""kecam (keras-cv-attention-models 1.4.3) LeViT-128 / ConvNeXt-Tiny / MaxViT-Tiny .h5 -> timm: exact equivalence.

Fixtures: random-weight Keras models saved like the released files, with reference logits from TensorFlow
(``tests/keras_fixtures/make_fixtures.py``, run once per session in a subprocess). A second, independent oracle is
kecam's own PyTorch backend loading the same .h5 (subprocess with ``KECAM_BACKEND=torch``): it gives logits and the
full attention-bias matrix of every positional layer, which the timm models must reproduce exactly.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from harmonized_models.keras import read_h5
from harmonized_models.keras import kecam
from keras_fixtures import fixture_dir

KECAM = ("levit128", "convnext_tiny", "maxvit_tiny")
RTOL = 1e-4  # max |timm - reference| <= RTOL * reference logit range (the criterion)


@pytest.fixture(scope="module")
def fx():
    return fixture_dir(KECAM)


@pytest.fixture(scope="module")
def files(fx):
    """arch -> (weights by layer, model_config, inputs NCHW tensor, reference logits)."""
    out = {}
    for arch in KECAM:
        weights, config = kecam.layer_weights(read_h5(fx / f"{arch}.h5"))
        ref = np.load(fx / f"{arch}.npz")
        out[arch] = (weights, config, torch.from_numpy(ref["inputs"]).permute(0, 3, 1, 2).contiguous(), ref["logits"])
    return out


@pytest.fixture(scope="module")
def mapped(fx):
    """(kecam arch, timm name) -> (KecamMapping, the H5Model it came from), converted once per module."""
    cache = {}

    def get(arch: str, timm_name: str):
        if (arch, timm_name) not in cache:
            h5 = read_h5(fx / f"{arch}.h5")
            cache[arch, timm_name] = (kecam.map_weights(timm_name, h5), h5)
        return cache[arch, timm_name]

    return get


def _logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(x).numpy()


def _rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    """max |diff| as a fraction of the reference logit range (max - min over all images and classes)."""
    return float(np.abs(y - ref).max() / (ref.max() - ref.min()))


# ------------------------------------------------------------------------------------------- tiny hand-made cases
def test_maxvit_relative_table_hand_case():
    """Window 2x2, one head, table = 0..8 at kecam index (dr + 1) * 3 + (dc + 1) with (dr, dc) = query - key."""
    from timm.layers.pos_embed_rel import RelPosBiasTf

    rel = RelPosBiasTf(window_size=(2, 2), num_heads=1)
    with torch.no_grad():
        rel.relative_position_bias_table.copy_(torch.from_numpy(
            kecam.maxvit_relative_table(np.arange(9, dtype=np.float32)[None])))
    # tokens (0,0), (0,1), (1,0), (1,1); e.g. q=(0,0), k=(0,1): d=(0,-1) -> 1*3 + 0 = 3
    expected = np.array([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]], np.float32)
    np.testing.assert_array_equal(rel.get_bias().detach().reshape(4, 4).numpy(), expected)


def test_levit_attention_biases_hand_case():
    """Resolution 2x2, one head, kecam table (N, heads) = 10..13 at index |dr| * 2 + |dc|; timm stores (heads, N)."""
    from timm.models.levit import Attention

    attn = Attention(dim=16, key_dim=4, num_heads=1, attn_ratio=2, resolution=2)
    attn.eval()  # (timm's Attention.train returns None)
    with torch.no_grad():
        attn.attention_biases.copy_(torch.from_numpy(
            kecam.levit_attention_biases(np.arange(10, 14, dtype=np.float32)[:, None])))
    expected = np.array([[10, 11, 12, 13], [11, 10, 13, 12], [12, 13, 10, 11], [13, 12, 11, 10]], np.float32)
    np.testing.assert_array_equal(attn.get_attention_biases(torch.device("cpu"))[0].detach().numpy(), expected)


def test_kernel_layouts_hand_case():
    k = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # kh, kw, cin, cout
    assert kecam.conv_kernel(k)[4, 3, 1, 2] == k[1, 2, 3, 4]
    d = np.arange(3 * 3 * 6, dtype=np.float32).reshape(3, 3, 6, 1)
    assert kecam.depthwise_kernel(d)[5, 0, 2, 1] == d[2, 1, 5, 0]
    w = np.arange(12, dtype=np.float32).reshape(3, 4)  # in, out
    assert kecam.dense_kernel(w)[3, 2] == w[2, 3]
    assert kecam.dense_as_pointwise(w).shape == (4, 3, 1, 1)
    assert kecam.pointwise_as_linear(w[None, None])[3, 2] == w[2, 3]
    with pytest.raises(kecam.UnmappedTensorsError, match="depth multiplier"):
        kecam.depthwise_kernel(np.zeros((3, 3, 6, 2), np.float32))


# ------------------------------------------------------------------------------------------- equivalence with TF
@pytest.mark.parametrize("arch,timm_name", [("levit128", "levit_conv_128"), ("levit128", "levit_128"),
                                            ("convnext_tiny", "convnext_tiny"),
                                            ("maxvit_tiny", "maxvit_tiny_tf_224")])
def test_timm_matches_tensorflow(files, mapped, arch, timm_name, record_property):
    mapped, h5 = mapped(arch, timm_name)
    assert h5.unused() == []
    assert mapped.model.default_cfg["architecture"] == timm_name
    assert not hasattr(mapped.model, "head_dist")  # the released LeViT has no distillation head
    assert all(src for key, src in mapped.sources.items() if not key.endswith("num_batches_tracked"))
    _, _, x, ref = files[arch]
    err = _rel_err(_logits(mapped.model, x), ref)
    record_property("max_rel_err", err)
    print(f"{arch} -> {timm_name}: max|diff|/max|ref| = {err:.2e}")
    assert err <= RTOL


KECAM_TORCH_ORACLE = textwrap.dedent("""
    import json, os, sys
    os.environ["KECAM_BACKEND"] = "torch"
    import numpy as np, torch
    from keras_cv_attention_models import levit, convnext, maxvit
    fx, out = sys.argv[1], sys.argv[2]
    build = {"levit128": lambda: levit.LeViT128(pretrained=None, use_distillation=False),
             "convnext_tiny": lambda: convnext.ConvNeXtTiny(pretrained=None, classifier_activation=None),
             "maxvit_tiny": lambda: maxvit.MaxViT_Tiny(pretrained=None, classifier_activation=None)}
    arrays = {}
    for arch, make in build.items():
        model = make()
        model.load_weights(os.path.join(fx, arch + ".h5"))
        model.eval()
        x = np.load(os.path.join(fx, arch + ".npz"))["inputs"]
        with torch.no_grad():
            arrays[arch + ":logits"] = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
            for layer in model.layers:
                if type(layer).__name__ in ("MultiHeadPositionalEmbedding", "MultiHeadRelativePositionalEmbedding"):
                    zeros = torch.zeros((1, *layer.input_shape[1:]))
                    arrays[arch + ":bias:" + layer.name] = layer(zeros)[0].numpy()
    np.savez(out, **arrays)
""")


@pytest.fixture(scope="module")
def kecam_torch(fx, tmp_path_factory):
    """Logits and attention-bias matrices from kecam's own PyTorch backend on the same files."""
    out = tmp_path_factory.mktemp("kecam_torch") / "oracle.npz"
    proc = subprocess.run([sys.executable, "-c", KECAM_TORCH_ORACLE, str(fx), str(out)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, KECAM_BACKEND="torch"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as data:
        return dict(data)


def _bias_matrices(mapped: kecam.KecamMapping) -> dict[str, np.ndarray]:
    """keras positional layer name -> the timm module's full bias matrix [heads, q, k]."""
    modules = dict(mapped.model.named_modules())
    out = {}
    for key, src in mapped.sources.items():
        if key.endswith("attention_biases"):
            module = modules[key.rsplit(".", 1)[0]]
            out[src.split("/positional_embedding")[0]] = module.get_attention_biases(torch.device("cpu")).detach().numpy()
        elif key.endswith("relative_position_bias_table"):
            module = modules[key.rsplit(".", 1)[0]]
            bias = module.get_bias().detach()
            out[src.split("/positional_embedding")[0]] = bias.reshape(-1, *bias.shape[-2:]).numpy()
    return out


@pytest.mark.parametrize("arch,timm_name,n_pos", [("levit128", "levit_conv_128", 14),
                                                  ("convnext_tiny", "convnext_tiny", 0),
                                                  ("maxvit_tiny", "maxvit_tiny_tf_224", 22)])
def test_matches_kecam_torch_backend(files, mapped, kecam_torch, arch, timm_name, n_pos):
    _, _, x, ref = files[arch]
    mapped, _ = mapped(arch, timm_name)
    ours = _logits(mapped.model, x)
    assert _rel_err(ours, kecam_torch[f"{arch}:logits"]) <= 1e-5
    assert _rel_err(kecam_torch[f"{arch}:logits"], ref) <= RTOL
    theirs = {k.split(":bias:", 1)[1]: v for k, v in kecam_torch.items() if k.startswith(f"{arch}:bias:")}
    mine = _bias_matrices(mapped)
    assert len(theirs) == n_pos and sorted(mine) == sorted(theirs)
    for name, bias in theirs.items():
        np.testing.assert_allclose(mine[name], bias, rtol=0, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------------- negative controls
def test_wrong_relative_position_layout_is_caught(files, kecam_torch, monkeypatch):
    """Without the axis flip the MaxViT bias matrices are transposed in (q, k): far from kecam's."""
    weights, config, _, _ = files["maxvit_tiny"]
    monkeypatch.setattr(kecam, "maxvit_relative_table",
                        lambda t: np.ascontiguousarray(t.reshape(t.shape[0], 13, 13)))
    mine = _bias_matrices(kecam.map_weights("maxvit_tiny", weights, config))
    name = "stack_1_block_1/block_window_mhsa/pos_emb"
    theirs = kecam_torch[f"maxvit_tiny:bias:{name}"]
    assert np.abs(mine[name] - theirs).max() > 0.1 * np.abs(theirs).max()


def test_missing_layer_scale_fails_tolerance(files):
    """ConvNeXt with its layer scale treated as 1 (what a converter dropping ChannelAffine would do)."""
    weights, config, x, ref = files["convnext_tiny"]
    broken = copy.deepcopy(weights)
    for layer in broken:
        if layer.endswith("_gamma"):
            broken[layer]["weight"] = np.ones_like(broken[layer]["weight"])
    err = _rel_err(_logits(kecam.map_weights("convnext_tiny", broken, config).model, x), ref)
    assert err > 100 * RTOL


def test_refuses_extra_missing_or_foreign_tensors(files):
    weights, config, _, _ = files["convnext_tiny"]
    model = kecam.build_timm("convnext_tiny")  # the checks fire before anything is loaded into it
    extra = dict(weights, extra_dense={"kernel": np.zeros((3, 3), np.float32)})
    with pytest.raises(kecam.UnmappedTensorsError, match="extra_dense/kernel"):
        kecam.map_weights("convnext_tiny", extra, model=model)
    missing = {k: v for k, v in weights.items() if k != "stack2_block1_gamma"}
    with pytest.raises(kecam.UnmappedTensorsError, match="stages.1.blocks.0.gamma"):
        kecam.map_weights("convnext_tiny", missing, model=model)
    reshaped = dict(weights, stem_ln={"gamma": np.ones(95, np.float32), "beta": weights["stem_ln"]["beta"]})
    with pytest.raises(kecam.UnmappedTensorsError, match=r"dataset 'stem_ln/gamma' declares shape \(95,\), which "
                                                         r"gives timm stem.1.weight the shape \(95,\) but the "
                                                         r"architecture expects \(96,\)"):
        kecam.map_weights("convnext_tiny", reshaped, model=model)
    with pytest.raises(kecam.UnmappedTensorsError, match="holds Keras model 'convnext_tiny'"):
        kecam.map_weights("maxvit_tiny_tf_224", weights, config)
    with pytest.raises(KeyError, match="unknown kecam architecture"):
        kecam.map_weights("convnext_small", weights, config)


def test_refuses_epsilon_mismatch(files):
    weights, config, _, _ = files["maxvit_tiny"]
    config = json.loads(json.dumps(config))
    for layer in config["config"]["layers"]:
        if layer["config"]["name"] == "stem_1_bn":
            layer["config"]["epsilon"] = 1e-5  # kecam's torch mode; timm's tf variant uses 1e-3
    with pytest.raises(kecam.UnmappedTensorsError, match="epsilon of stem_1_bn"):
        kecam.map_weights("maxvit_tiny", weights, config)


def test_refuses_padding_or_stride_mismatch(fx):
    """kecam's ZeroPadding2D(1) + 'valid' stem conv is timm's padding=1; TF-style (0, 1) padding would not be."""
    from harmonized_models.keras import KerasFormatError

    h5 = read_h5(fx / "levit128.h5")
    h5.layer("stem_1_pad").config["padding"] = [[0, 1], [0, 1]]
    with pytest.raises(KerasFormatError, match="stem_1_conv.*zero padding"):
        kecam.map_weights("levit128", h5)


def test_distillation_head_maps_onto_levit_distilled(files, mapped):
    """A LeViT file with kecam's distill head (use_distillation=True) maps onto timm's LevitDistilled."""
    weights, config, x, _ = files["levit128"]
    with_distill = dict(weights)
    with_distill["distill_head_bn"] = {k: v + 0.1 for k, v in weights["head_bn"].items()}
    with_distill["distill_head"] = {k: -v for k, v in weights["head"].items()}
    distilled = kecam.map_weights("levit_conv_128", with_distill)
    assert type(distilled.model).__name__ == "LevitDistilled"
    assert distilled.sources["head_dist.linear.weight"] == "distill_head/kernel"
    single = mapped("levit128", "levit_conv_128")[0].model
    with torch.inference_mode():
        feats = single.forward_head(single.forward_features(x), pre_logits=True)
        dist = distilled.model.head_dist(feats)
    np.testing.assert_allclose(_logits(distilled.model, x), (_logits(single, x) + dist.numpy()) / 2, rtol=1e-5,
                               atol=1e-5)


# ------------------------------------------------------------------------------------------- pipeline and specs
def test_convert_keras_round_trip(fx, files, tmp_path):
    """``convert_keras`` (D1's driver) dispatches to the kecam mapper; the safetensors reloads to the same logits."""
    from harmonized_models.keras import convert_keras
    from harmonized_models.keras.convert import load_converted

    out = tmp_path / "levit.safetensors"
    report = convert_keras(fx / "levit128.h5", "levit128", out)
    assert report["config"] == {"timm_arch": "levit_conv_128", "distilled": False}
    assert report["tensors_mapped"] == report["tensors_in_file"] == 330
    model = load_converted(out)
    _, _, x, ref = files["levit128"]
    assert _rel_err(_logits(model, x), ref) <= RTOL
    with pytest.raises(kecam.UnmappedTensorsError, match=r"levit128\.h5: the file holds Keras model 'levit128'"):
        convert_keras(fx / "levit128.h5", "maxvit_tiny", tmp_path / "wrong.safetensors")
    assert not (tmp_path / "wrong.safetensors").exists()


@pytest.mark.parametrize("name", ["harmonized_levit_128", "harmonized_convnext_tiny", "harmonized_maxvit_tiny"])
def test_harmonized_specs_follow_the_layer_rule(name):
    """Our three entries: /255 + ImageNet mean/std at 224 px, and the layer rule's commitment on the timm network."""
    from harmonized_models.harmonized import HARMONIZED
    from harmonized_models.layer_rules import commit_layers
    from harmonized_models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    spec = HARMONIZED[name]
    assert (spec.preprocessing.image_size, spec.preprocessing.mean, spec.preprocessing.std) == \
        (224, IMAGENET_MEAN, IMAGENET_STD)
    network = spec.builder()
    assert type(network).__name__ != "LevitDistilled"
    rule = commit_layers(network, 224)
    assert spec.region_layer_map == rule.region_layer_map and spec.it_layer == rule.region_layer_map["IT"]
    assert list(spec.candidate_layers) == rule.candidate_layers
    it = next(u for u in rule.units if u.name == spec.it_layer)
    assert it.layout == "NCHW" and it.side == 14  # a spatial map for the IT-map benchmarks
