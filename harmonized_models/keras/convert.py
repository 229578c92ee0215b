"""Convert a Keras ``.h5`` model into a PyTorch state dict, tensor by tensor, refusing anything that does not map.

``convert_keras(h5_path, arch, out_path) -> report`` first maps the file's *declared* shapes onto the architecture
without reading a tensor (:func:`check_declared_shapes`: an unknown, missing or mis-shaped dataset is refused before
it costs memory), then reads the file with h5py (:mod:`.h5`), reads the structure
the torch module must have from the file's ``model_config`` (BatchNorm epsilon, stride placement, padding, input
rescaling layers), builds the torch module, maps EVERY tensor of the file onto it and writes a safetensors file
atomically.  It refuses (``UnmappedTensorsError``, naming the tensors) a file with a tensor that no torch parameter
takes, or a torch parameter that no tensor fills; it refuses (``KerasFormatError``) a layer whose stride, padding or
epsilon the torch module cannot reproduce.

Layout rules: Conv2D kernel HWIO -> OIHW; DepthwiseConv2D (H, W, C, 1) -> (C, 1, H, W); Dense (in, out) -> (out, in);
a Dense after ``Flatten`` of an NHWC map becomes a conv over the map (VGG fc1: rows in (h, w, c) order);
BatchNormalization gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var.

The output module reproduces the Keras model's logits **before** the output activation (softmax heads are
dropped), from the same input the Keras model received (NCHW instead of NHWC).

Dispatch table ``ARCHS``: arch name -> :class:`ArchSpec` (configure, build, map).  ``harmonized_models.keras.kecam``
registers its archs with :func:`register_arch`.  The safetensors metadata holds ``arch`` and the JSON ``config``, so
:func:`load_converted` rebuilds the module without the ``.h5``.
"""
from __future__ import annotations

import json
import logging
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .h5 import H5Model, KerasFormatError, KerasLayer, UnmappedTensorsError, contiguous, read_h5

log = logging.getLogger(__name__)

State = dict[str, Any]


@dataclass(frozen=True)
class ArchSpec:
    """How to turn one Keras architecture into a torch module.

    configure(h5) -> dict: JSON-serialisable structure read from the file (eps, strides, input scaling, ...).
    build(config) -> nn.Module: the torch module with random weights (eval mode).
    map(h5, module, config) -> {state-dict key: array}: the file's tensors re-laid out; it must take (``h5.take``
    or ``h5.mark_taken``) every tensor it uses.
    """

    name: str
    configure: Callable[[H5Model], dict]
    build: Callable[[dict], nn.Module]
    map: Callable[[H5Model, nn.Module, dict], State]
    description: str = ""


ARCHS: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add (or replace) an arch in the dispatch table."""
    ARCHS[spec.name] = spec
    return spec


def _ensure_registered() -> None:
    """Import modules that register more archs (kecam: LeViT, ConvNeXt, MaxViT)."""
    try:
        from . import kecam  # noqa: F401  (registers on import)
    except Exception as exc:  # noqa: BLE001 - a broken kecam.py must not break the other archs
        log.warning("kecam archs unavailable: %s", exc)


def get_arch(arch: str) -> ArchSpec:
    _ensure_registered()
    if arch not in ARCHS:
        import difflib

        close = difflib.get_close_matches(arch, list(ARCHS), n=3)
        raise KeyError(f"unknown Keras arch {arch!r}; known: {', '.join(sorted(ARCHS))}"
                       + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return ARCHS[arch]


# ============================================================================================ layout helpers
def conv_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras Conv2D kernel (kh, kw, cin, cout) -> torch (cout, cin, kh, kw)."""
    return contiguous(kernel.transpose(3, 2, 0, 1))


def depthwise_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras DepthwiseConv2D kernel (kh, kw, c, multiplier) -> torch (c * multiplier, 1, kh, kw)."""
    kh, kw, c, mult = kernel.shape
    return contiguous(kernel.reshape(kh, kw, c * mult).transpose(2, 0, 1)[:, None])


def dense_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras Dense kernel (in, out) -> torch Linear weight (out, in)."""
    return contiguous(kernel.T)


def flatten_dense_as_conv(kernel: np.ndarray, h: int, w: int, c: int) -> np.ndarray:
    """Dense after Flatten of an NHWC (h, w, c) map, kernel (h*w*c, out) -> conv weight (out, c, h, w).

    Keras flattens channels-last, so row index = (i * w + j) * c + k; torch's NCHW needs (out, c, i, j).
    """
    return contiguous(kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _zero_padding(h5: H5Model, layer: KerasLayer) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of a ZeroPadding2D feeding ``layer``, or None."""
    if len(layer.inbound) != 1 or not h5.has_layer(layer.inbound[0]):
        return None
    src = h5.layer(layer.inbound[0])
    if src.base_class != "ZeroPadding2D":
        return None
    p = src.config["padding"]
    if isinstance(p, int):
        return (p, p, p, p)
    (t, b), (l, r) = [(x, x) if isinstance(x, int) else tuple(x) for x in p]
    return (int(t), int(b), int(l), int(r))


def check_conv(h5: H5Model, layer: KerasLayer, module: nn.Conv2d) -> None:
    """Refuse a torch conv whose stride, dilation or padding differs from the Keras layer's."""
    cfg = layer.config
    where = f"{h5.path}: layer {layer.name!r}"
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise KerasFormatError(f"{where}: data_format {cfg.get('data_format')!r} is not supported")
    if _pair(cfg.get("strides", 1)) != tuple(module.stride):
        raise KerasFormatError(f"{where}: strides {cfg.get('strides')} but the torch module has {module.stride}")
    if _pair(cfg.get("dilation_rate", 1)) != tuple(module.dilation):
        raise KerasFormatError(f"{where}: dilation {cfg.get('dilation_rate')} != torch {module.dilation}")
    k = tuple(module.kernel_size)
    dynamic_same = "Same" in type(module).__name__ or module.padding == "same"
    if cfg.get("padding") == "same":
        if dynamic_same:
            return
        if tuple(module.stride) == (1, 1) and all(ki % 2 == 1 for ki in k) and \
                tuple(module.padding) == tuple((ki - 1) // 2 for ki in k):
            return
        raise KerasFormatError(f"{where}: TF 'same' padding (stride {module.stride}, kernel {k}) is not "
                               f"reproduced by torch padding {module.padding}")
    pad = _zero_padding(h5, layer) or (0, 0, 0, 0)
    if dynamic_same:
        # keras.applications' correct_pad: ZeroPadding2D((k-s)//2, (k-s) - (k-s)//2) + 'valid' equals TF 'same'
        # (what timm's Conv2dSame does) whenever the input size is divisible by the stride (224 at every layer).
        same = []
        for ki, si in zip(k, module.stride):
            total = max(ki - si, 0)
            same += [total // 2, total - total // 2]
        if tuple(pad) == tuple(same):
            return
    if dynamic_same or pad[0] != pad[1] or pad[2] != pad[3] or (pad[0], pad[2]) != tuple(module.padding):
        raise KerasFormatError(f"{where}: 'valid' conv after zero padding {pad} does not match torch "
                               f"{type(module).__name__} padding {module.padding}")


class _Mapper:
    """Collects a torch state dict from Keras layers, checking shapes against the torch module."""

    def __init__(self, h5: H5Model, module: nn.Module):
        self.h5 = h5
        self.module = module
        self.target = module.state_dict()
        self.modules = dict(module.named_modules())
        self.state: State = {}

    def put(self, key: str, value: np.ndarray) -> None:
        if key not in self.target:
            raise KerasFormatError(f"converter bug: torch module has no {key!r}")
        if tuple(self.target[key].shape) != tuple(value.shape):
            source = self.h5.last_taken
            declared = f"dataset '{source}' declares shape {self.h5.declared_shape(source)}, which" if source else \
                "the tensor"
            raise KerasFormatError(f"{self.h5.path}: {declared} gives {key!r} the shape {tuple(value.shape)} but the "
                                   f"architecture expects {tuple(self.target[key].shape)}; the file does not hold "
                                   "this architecture's weights (use the original .h5, or the right --arch)")
        self.state[key] = value

    def conv(self, prefix: str, layer: str, check: bool = True) -> None:
        mod = self.modules[prefix]
        lay = self.h5.layer(layer)
        o, i, kh, kw = mod.weight.shape
        if lay.base_class == "DepthwiseConv2D":
            mult = o // mod.groups
            w = self.h5.take(lay, "depthwise_kernel", (kh, kw, mod.groups, mult))
            self.put(f"{prefix}.weight", depthwise_kernel(w))
        else:
            w = self.h5.take(lay, "kernel", (kh, kw, i, o))
            self.put(f"{prefix}.weight", conv_kernel(w))
        self._bias(prefix, lay, mod, (o,))
        if check:
            check_conv(self.h5, lay, mod)

    def dense(self, prefix: str, layer: str) -> None:
        mod = self.modules[prefix]
        lay = self.h5.layer(layer)
        o, i = mod.weight.shape
        self.put(f"{prefix}.weight", dense_kernel(self.h5.take(lay, "kernel", (i, o))))
        self._bias(prefix, lay, mod, (o,))

    def _bias(self, prefix: str, lay: KerasLayer, mod: nn.Module, shape: tuple) -> None:
        has_torch = getattr(mod, "bias", None) is not None
        has_keras = bool(lay.find("bias", shape))
        if has_torch != has_keras:
            raise KerasFormatError(f"{self.h5.path}: layer {lay.name!r} bias={has_keras} but torch {prefix!r} "
                                   f"bias={has_torch}")
        if has_keras:
            self.put(f"{prefix}.bias", self.h5.take(lay, "bias", shape))

    def bn(self, prefix: str, layer: str) -> None:
        mod = self.modules[prefix]
        lay = self.h5.layer(layer)
        (c,) = mod.running_mean.shape
        eps = float(lay.config.get("epsilon", 1e-3))
        if not np.isclose(eps, mod.eps, rtol=1e-6, atol=0):
            raise KerasFormatError(f"converter bug: {prefix!r} eps {mod.eps} != {layer!r} epsilon {eps}")
        gamma = self.h5.take(lay, "gamma", (c,)) if lay.find("gamma", (c,)) else np.ones(c, np.float32)
        beta = self.h5.take(lay, "beta", (c,)) if lay.find("beta", (c,)) else np.zeros(c, np.float32)
        self.put(f"{prefix}.weight", gamma)
        self.put(f"{prefix}.bias", beta)
        self.put(f"{prefix}.running_mean", self.h5.take(lay, "moving_mean", (c,)))
        self.put(f"{prefix}.running_var", self.h5.take(lay, "moving_variance", (c,)))

    def layer_norm(self, prefix: str, layer: KerasLayer | str, suffix: str = "") -> None:
        mod = self.modules[prefix]
        lay = layer if isinstance(layer, KerasLayer) else self.h5.layer(layer)
        (c,) = mod.weight.shape
        self.put(f"{prefix}.weight", self.h5.take(lay, f"{suffix}gamma", (c,)))
        self.put(f"{prefix}.bias", self.h5.take(lay, f"{suffix}beta", (c,)))


def uniform_bn_eps(h5: H5Model) -> float:
    """The epsilon shared by all BatchNormalization layers (error if they differ)."""
    eps = {float(layer.config.get("epsilon", 1e-3)) for layer in h5.by_class("BatchNormalization")}
    if len(eps) != 1:
        raise KerasFormatError(f"{h5.path}: BatchNormalization epsilons {sorted(eps)}; expected one value")
    return eps.pop()


def _set_bn_eps(module: nn.Module, eps: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = eps


def output_dense(h5: H5Model) -> KerasLayer:
    """The model's final Dense layer (the classifier)."""
    dense = h5.by_class("Dense")
    if not dense:
        raise KerasFormatError(f"{h5.path}: no Dense classifier layer (include_top=False files are not supported)")
    return dense[-1]


# ============================================================================================ VGG16
VGG16_BLOCKS = (2, 2, 3, 3, 3)


def _vgg16_configure(h5: H5Model) -> dict:
    convs = h5.by_class("Conv2D")
    if len(convs) != 13 or len(h5.by_class("Dense")) != 3 or not h5.by_class("Flatten"):
        raise KerasFormatError(f"{h5.path}: not a VGG16 with top (expected 13 Conv2D, Flatten, 3 Dense; found "
                               f"{len(convs)} Conv2D, {len(h5.by_class('Dense'))} Dense)")
    fc1 = h5.by_class("Dense")[0]
    n_in = h5.layer(fc1.name).weights[fc1.find("kernel")[0]].shape[0]
    spatial = int(round((n_in / 512) ** 0.5))
    if spatial * spatial * 512 != n_in:
        raise KerasFormatError(f"{h5.path}: fc1 input {n_in} is not a square 512-channel map")
    return {"num_classes": int(output_dense(h5).config["units"]), "fc1_spatial": spatial}


def _vgg16_build(cfg: dict) -> nn.Module:
    import timm

    return timm.create_model("vgg16", pretrained=False, num_classes=cfg["num_classes"]).eval()


def _vgg16_map(h5: H5Model, module: nn.Module, cfg: dict) -> State:
    mp = _Mapper(h5, module)
    torch_convs = [name for name, m in module.features.named_children() if isinstance(m, nn.Conv2d)]
    keras_convs = [layer.name for layer in h5.by_class("Conv2D")]
    for tname, kname in zip(torch_convs, keras_convs):
        mp.conv(f"features.{tname}", kname)
    for pool in h5.by_class("MaxPooling2D"):
        if _pair(pool.config["pool_size"]) != (2, 2) or _pair(pool.config["strides"]) != (2, 2):
            raise KerasFormatError(f"{h5.path}: {pool.name} is not a 2x2/2 max pooling")
    flatten = h5.by_class("Flatten")[0]
    if flatten.config.get("data_format", "channels_last") != "channels_last":
        raise KerasFormatError(f"{h5.path}: Flatten data_format must be channels_last")
    fc1, fc2, pred = h5.by_class("Dense")
    s = cfg["fc1_spatial"]
    w = h5.take(fc1, "kernel", (s * s * 512, 4096))
    mp.put("pre_logits.fc1.weight", flatten_dense_as_conv(w, s, s, 512))
    mp.put("pre_logits.fc1.bias", h5.take(fc1, "bias", (4096,)))
    mp.put("pre_logits.fc2.weight", dense_kernel(h5.take(fc2, "kernel", (4096, 4096)))[:, :, None, None])
    mp.put("pre_logits.fc2.bias", h5.take(fc2, "bias", (4096,)))
    mp.dense("head.fc", pred.name)
    return mp.state


register_arch(ArchSpec("vgg16", _vgg16_configure, _vgg16_build, _vgg16_map,
                       "Keras VGG16 -> timm vgg16 (fc1/fc2 as 7x7/1x1 convs; NHWC flatten order)"))


# ============================================================================================ ResNet50 v1
def _resnet_names(naming: str, stage: int, block: int) -> dict[str, str]:
    """Keras layer names of one bottleneck (stage 2..5, block 0-based) for 'caffe' or 'keras' (TF2) naming."""
    if naming == "caffe":
        b = string.ascii_lowercase[block]
        return {f"{k}": f"res{stage}{b}_branch{v}" for k, v in
                (("conv1", "2a"), ("conv2", "2b"), ("conv3", "2c"), ("downsample.0", "1"))} | \
               {f"{k}": f"bn{stage}{b}_branch{v}" for k, v in
                (("bn1", "2a"), ("bn2", "2b"), ("bn3", "2c"), ("downsample.1", "1"))}
    p = f"conv{stage}_block{block + 1}_"
    return {"conv1": p + "1_conv", "conv2": p + "2_conv", "conv3": p + "3_conv", "downsample.0": p + "0_conv",
            "bn1": p + "1_bn", "bn2": p + "2_bn", "bn3": p + "3_bn", "downsample.1": p + "0_bn"}


def _resnet_naming(h5: H5Model) -> str:
    if h5.has_layer("res2a_branch2a"):
        return "caffe"
    if h5.has_layer("conv2_block1_1_conv"):
        return "keras"
    raise KerasFormatError(f"{h5.path}: not a Keras ResNet50 v1 (no res2a_branch2a / conv2_block1_1_conv layer; "
                           "ResNet50V2 pre-activation files are not supported)")


def _resnet50_configure(h5: H5Model) -> dict:
    naming = _resnet_naming(h5)
    first = h5.layer(_resnet_names(naming, 3, 0)["conv1"])
    pool = h5.by_class("MaxPooling2D")
    if len(pool) != 1:
        raise KerasFormatError(f"{h5.path}: expected one MaxPooling2D, found {len(pool)}")
    pad = _zero_padding(h5, pool[0]) or (0, 0, 0, 0)
    if len(set(pad)) != 1:
        raise KerasFormatError(f"{h5.path}: asymmetric padding {pad} before {pool[0].name}")
    return {"naming": naming, "eps": uniform_bn_eps(h5), "stride_in_1x1": _pair(first.config["strides"]) == (2, 2),
            "maxpool_padding": pad[0], "num_classes": int(output_dense(h5).config["units"])}


def _resnet50_build(cfg: dict) -> nn.Module:
    from ..architectures.caffe_resnet50 import caffe_resnet50

    return caffe_resnet50(cfg["num_classes"], cfg["eps"], cfg["stride_in_1x1"], cfg["maxpool_padding"])


def _resnet50_map(h5: H5Model, module: nn.Module, cfg: dict) -> State:
    naming = cfg["naming"]
    mp = _Mapper(h5, module)
    mp.conv("conv1", "conv1" if naming == "caffe" else "conv1_conv")
    mp.bn("bn1", "bn_conv1" if naming == "caffe" else "conv1_bn")
    pool = h5.by_class("MaxPooling2D")[0]
    if _pair(pool.config["pool_size"]) != (3, 3) or _pair(pool.config["strides"]) != (2, 2):
        raise KerasFormatError(f"{h5.path}: {pool.name} is not a 3x3/2 max pooling")
    for i in range(4):
        for j, block in enumerate(getattr(module, f"layer{i + 1}")):
            names = _resnet_names(naming, i + 2, j)
            for part in ("conv1", "conv2", "conv3") + (("downsample.0",) if block.downsample is not None else ()):
                mp.conv(f"layer{i + 1}.{j}.{part}", names[part])
            for part in ("bn1", "bn2", "bn3") + (("downsample.1",) if block.downsample is not None else ()):
                mp.bn(f"layer{i + 1}.{j}.{part}", names[part])
    mp.dense("fc", output_dense(h5).name)
    return mp.state


register_arch(ArchSpec("resnet50", _resnet50_configure, _resnet50_build, _resnet50_map,
                       "Keras ResNet50 v1 (caffe names res5c_branch2b or TF2 names) -> CaffeResNet50"))


# ============================================================================================ EfficientNetB0
class InputAffine(nn.Module):
    """Per-channel ``x * scale + offset`` on NCHW input: the Keras model's own input layers folded into one."""

    def __init__(self, scale: list[float], offset: list[float]):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


def _constant(value: Any, channels: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    return np.broadcast_to(arr, (channels,)).copy() if arr.size in (1, channels) else None


def fold_input_layers(h5: H5Model, channels: int = 3) -> tuple[list[float], list[float], list[str]]:
    """Fold the chain of Rescaling / Normalization / constant multiply-divide layers after the input into
    one per-channel affine map ``y = a * x + b``; returns (a, b, folded layer names).

    Handles Keras 2.13-2.15 (``rescaling``, ``normalization``, ``rescaling_1``), TF 2.9 (``tf.math.truediv``)
    and tf_keras 2.16+ (``tf.math.multiply``); a file without such layers (qubvel's efficientnet) gives identity.
    Normalization divides by ``max(sqrt(variance), 1e-7)`` like Keras; mean and variance come from the file
    (weights) or from the layer config when given there.
    """
    inputs = [layer for layer in h5.layers if layer.base_class == "InputLayer"]
    if len(inputs) != 1:
        raise KerasFormatError(f"{h5.path}: expected one InputLayer, found {len(inputs)}")
    consumers: dict[str, list[KerasLayer]] = {}
    for layer in h5.layers:
        for src in layer.inbound:
            consumers.setdefault(src, []).append(layer)
    a = np.ones(channels)
    b = np.zeros(channels)
    folded: list[str] = []
    current = inputs[0]
    while len(consumers.get(current.name, [])) == 1:
        nxt = consumers[current.name][0]
        cfg = nxt.config
        if nxt.base_class == "Rescaling":
            s, o = _constant(cfg["scale"], channels), _constant(cfg.get("offset", 0.0), channels)
            a, b = a * s, b * s + o
        elif nxt.base_class == "Normalization":
            axis = cfg.get("axis", -1)
            axis = [axis] if isinstance(axis, int) else list(axis)
            if axis not in ([-1], [3]) or cfg.get("invert", False):
                raise KerasFormatError(f"{h5.path}: Normalization {nxt.name!r} axis {axis}, invert "
                                       f"{cfg.get('invert')}: only per-channel normalisation is supported")
            if cfg.get("mean") is not None:
                mean, var = _constant(cfg["mean"], channels), _constant(cfg["variance"], channels)
                for key in list(nxt.weights):  # nothing else to map; mark any stored copies as used
                    h5.mark_taken(nxt.name, key)
            else:
                mean = h5.take(nxt, "mean").reshape(-1).astype(np.float64)
                var = h5.take(nxt, "variance").reshape(-1).astype(np.float64)
                if nxt.find("count"):
                    h5.take(nxt, "count")
            std = np.maximum(np.sqrt(var), 1e-7)
            a, b = a / std, (b - mean) / std
        elif nxt.base_class == "TFOpLambda" and cfg.get("function") in ("math.multiply", "math.truediv"):
            raw = _lambda_constant(h5, nxt)  # the constant operand is in the inbound node's kwargs
            if raw is None:
                raise KerasFormatError(f"{h5.path}: {nxt.name!r} ({cfg.get('function')}) has no constant operand")
            c = _constant(raw, channels)
            if cfg.get("function") == "math.truediv":
                c = 1.0 / c
            a, b = a * c, b * c
        else:
            break
        folded.append(nxt.name)
        current = nxt
    return a.tolist(), b.tolist(), folded


def _lambda_constant(h5: H5Model, layer: KerasLayer) -> Any:
    """The constant ``y`` of a TFOpLambda call, from the raw model_config inbound node kwargs."""
    for lc in (h5.model_config or {}).get("config", {}).get("layers", []):
        if lc.get("name") == layer.name:
            nodes = lc.get("inbound_nodes")

            def find_y(obj: Any) -> Any:
                if isinstance(obj, dict):
                    if "y" in obj:
                        return obj["y"]
                    for v in obj.values():
                        r = find_y(v)
                        if r is not None:
                            return r
                elif isinstance(obj, list):
                    for v in obj:
                        r = find_y(v)
                        if r is not None:
                            return r
                return None

            return find_y(nodes)
    return None


def _effnet_class():
    from timm.models.efficientnet import EfficientNet

    class KerasEfficientNet(EfficientNet):
        """timm EfficientNet whose ``input_affine`` replays the Keras model's input rescaling layers."""

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward_features(self.input_affine(x))

    return KerasEfficientNet


_KerasEfficientNet = None


def _effnet_configure(h5: H5Model) -> dict:
    if not h5.has_layer("block1a_dwconv") or not h5.has_layer("stem_conv"):
        raise KerasFormatError(f"{h5.path}: not a Keras EfficientNet (no stem_conv / block1a_dwconv layer)")
    scale, offset, folded = fold_input_layers(h5)
    return {"eps": uniform_bn_eps(h5), "num_classes": int(output_dense(h5).config["units"]),
            "input_scale": scale, "input_offset": offset, "input_layers": folded}


def _effnet_build(cfg: dict) -> nn.Module:
    import timm

    global _KerasEfficientNet
    if _KerasEfficientNet is None:
        _KerasEfficientNet = _effnet_class()
    net = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=cfg["num_classes"])
    net.__class__ = _KerasEfficientNet
    net.input_affine = InputAffine(cfg["input_scale"], cfg["input_offset"])
    _set_bn_eps(net, cfg["eps"])
    return net.eval()


def _effnet_map(h5: H5Model, module: nn.Module, cfg: dict) -> State:
    mp = _Mapper(h5, module)
    mp.put("input_affine.scale", np.asarray(cfg["input_scale"], np.float32).reshape(1, -1, 1, 1))
    mp.put("input_affine.offset", np.asarray(cfg["input_offset"], np.float32).reshape(1, -1, 1, 1))
    mp.conv("conv_stem", "stem_conv")
    mp.bn("bn1", "stem_bn")
    for s, stage in enumerate(module.blocks):
        for j, block in enumerate(stage):
            p, t = f"block{s + 1}{string.ascii_lowercase[j]}_", f"blocks.{s}.{j}"
            inverted = hasattr(block, "conv_pwl")
            if inverted:
                mp.conv(f"{t}.conv_pw", p + "expand_conv")
                mp.bn(f"{t}.bn1", p + "expand_bn")
            mp.conv(f"{t}.conv_dw", p + "dwconv")
            mp.bn(f"{t}.bn2" if inverted else f"{t}.bn1", p + "bn")
            mp.conv(f"{t}.se.conv_reduce", p + "se_reduce")
            mp.conv(f"{t}.se.conv_expand", p + "se_expand")
            mp.conv(f"{t}.conv_pwl" if inverted else f"{t}.conv_pw", p + "project_conv")
            mp.bn(f"{t}.bn3" if inverted else f"{t}.bn2", p + "project_bn")
    mp.conv("conv_head", "top_conv")
    mp.bn("bn2", "top_bn")
    mp.dense("classifier", output_dense(h5).name)
    return mp.state


register_arch(ArchSpec("efficientnet_b0", _effnet_configure, _effnet_build, _effnet_map,
                       "Keras / qubvel EfficientNetB0 -> timm tf_efficientnet_b0 (+ the file's input rescaling)"))


# ============================================================================================ ViT-B/16
def _vit_configure(h5: H5Model) -> dict:
    blocks = [layer for layer in h5.layers if layer.base_class == "TransformerBlock"]
    pos = [layer for layer in h5.layers if layer.base_class == "AddPositionEmbs"]
    if not blocks or len(pos) != 1 or not h5.has_layer("embedding"):
        raise KerasFormatError(f"{h5.path}: not a vit-keras ViT (no embedding / TransformerBlock / "
                               "AddPositionEmbs layers)")
    embed = h5.layer("embedding")
    if h5.has_layer("pre_logits"):
        raise UnmappedTensorsError(f"{h5.path}: has a 'pre_logits' representation layer (ImageNet-21k head); "
                                   "not supported by the vit_base_patch16_224 mapping")
    kernel = embed.weights[embed.find("kernel")[0]]
    patch, dim = int(kernel.shape[0]), int(kernel.shape[3])
    n_tokens = pos[0].weights[pos[0].find("pos_embedding")[0]].shape[1]
    grid = int(round((n_tokens - 1) ** 0.5))
    norm = h5.layer("Transformer/encoder_norm")
    return {"patch_size": patch, "embed_dim": dim, "depth": len(blocks),
            "num_heads": int(blocks[0].config["num_heads"]), "mlp_ratio": blocks[0].config["mlp_dim"] / dim,
            "img_size": grid * patch, "num_classes": int(output_dense(h5).config["units"]),
            "norm_eps": float(norm.config.get("epsilon", 1e-6))}


def _vit_build(cfg: dict) -> nn.Module:
    import timm

    if abs(cfg["norm_eps"] - 1e-6) > 1e-12:
        raise KerasFormatError(f"ViT encoder_norm epsilon {cfg['norm_eps']} != 1e-6 (timm's)")
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=cfg["num_classes"],
                             img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"],
                             depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"]).eval()


def _vit_map(h5: H5Model, module: nn.Module, cfg: dict) -> State:
    mp = _Mapper(h5, module)
    d = cfg["embed_dim"]
    mp.conv("patch_embed.proj", "embedding")
    mp.put("cls_token", h5.take(h5.by_class("ClassToken")[0], "cls", (1, 1, d)))
    pos = h5.by_class("AddPositionEmbs")[0]
    mp.put("pos_embed", h5.take(pos, "pos_embedding"))
    blocks = [layer for layer in h5.layers if layer.base_class == "TransformerBlock"]
    for i, blk in enumerate(blocks):
        t = f"blocks.{i}"
        mp.layer_norm(f"{t}.norm1", blk, "LayerNorm_0/")
        q, k, v = (h5.take(blk, f"{n}/kernel", (d, d)) for n in ("query", "key", "value"))
        mp.put(f"{t}.attn.qkv.weight", np.concatenate([dense_kernel(q), dense_kernel(k), dense_kernel(v)], 0))
        mp.put(f"{t}.attn.qkv.bias", np.concatenate([h5.take(blk, f"{n}/bias", (d,))
                                                     for n in ("query", "key", "value")]))
        mp.put(f"{t}.attn.proj.weight", dense_kernel(h5.take(blk, "out/kernel", (d, d))))
        mp.put(f"{t}.attn.proj.bias", h5.take(blk, "out/bias", (d,)))
        mp.layer_norm(f"{t}.norm2", blk, "LayerNorm_2/")
        hidden = module.blocks[i].mlp.fc1.out_features
        mp.put(f"{t}.mlp.fc1.weight", dense_kernel(h5.take(blk, "Dense_0/kernel", (d, hidden))))
        mp.put(f"{t}.mlp.fc1.bias", h5.take(blk, "Dense_0/bias", (hidden,)))
        mp.put(f"{t}.mlp.fc2.weight", dense_kernel(h5.take(blk, "Dense_1/kernel", (hidden, d))))
        mp.put(f"{t}.mlp.fc2.bias", h5.take(blk, "Dense_1/bias", (d,)))
    mp.layer_norm("norm", "Transformer/encoder_norm")
    mp.dense("head", output_dense(h5).name)
    return mp.state


register_arch(ArchSpec("vit_b16", _vit_configure, _vit_build, _vit_map,
                       "vit-keras 0.1.2 ViT-B/16 -> timm vit_base_patch16_224"))


# ============================================================================================ driver
def build_network(arch: str, config: dict) -> nn.Module:
    """The torch module of ``arch`` with the structure ``config`` (random weights, eval mode)."""
    return get_arch(arch).build(config)


def _build_skeleton(spec: ArchSpec, config: dict) -> nn.Module:
    """The module on the meta device (no random initialisation: VGG16's 138 M parameters take seconds)."""
    try:
        with torch.device("meta"):
            return spec.build(config)
    except Exception:  # noqa: BLE001 - a builder that cannot run on meta: build it for real
        return spec.build(config)


def _with_weights(spec: ArchSpec, config: dict, skeleton: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Put ``tensors`` into the skeleton; modules whose non-persistent buffers stay on meta are rebuilt on CPU."""
    skeleton.load_state_dict(tensors, strict=True, assign=True)
    if any(t.is_meta for t in (*skeleton.parameters(), *skeleton.buffers())):
        skeleton = spec.build(config)
        skeleton.load_state_dict(tensors, strict=True)
    return skeleton.eval()


def _check_complete(h5: H5Model, arch: str, module: nn.Module, state: State) -> None:
    """Refuse a file with a tensor that no torch parameter takes, or a torch parameter that no tensor fills."""
    unused = h5.unused()
    if unused:
        shown = ", ".join(f"{name} {h5.declared_shape(name)}" for name in unused[:12]) + \
            (f", ... ({len(unused)} in all)" if len(unused) > 12 else "")
        raise UnmappedTensorsError(f"{h5.path}: {len(unused)} dataset(s) of the file do not map onto arch "
                                   f"{arch!r}: {shown}. Is this the right --arch?")
    target = module.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        shown = ", ".join(f"{k} {tuple(target[k].shape)}" for k in missing[:12])
        raise UnmappedTensorsError(f"{h5.path}: torch parameters of arch {arch!r} with no tensor in the file: "
                                   f"{shown}" + (" ..." if len(missing) > 12 else "") + ". Is this the right --arch?")


def _map_onto_skeleton(spec, h5: H5Model, config: dict, refuse: tuple) -> tuple[nn.Module, dict]:
    """``spec.map`` onto a meta-device skeleton of the architecture; ``refuse`` errors mean the file does not map
    and propagate. A mapper that fails otherwise may read values from the module, which meta tensors cannot give:
    it is then run again on a real module."""
    module = _build_skeleton(spec, config)
    try:
        return module, spec.map(h5, module, config)
    except refuse:
        raise
    except Exception:  # noqa: BLE001 - a mapper that reads values from the module cannot run on meta tensors
        if not any(t.is_meta for t in module.state_dict().values()):
            raise
        module = spec.build(config)
        return module, spec.map(h5, module, config)


def check_declared_shapes(h5: H5Model, arch: str) -> None:
    """Map a :func:`read_h5` ``declared_only`` file onto ``arch`` without reading any tensor: every dataset's
    declared shape must be the one the architecture expects after the Keras -> torch layout (an unknown, missing or
    mis-shaped dataset raises :class:`KerasFormatError` naming it, its declared and the expected shape).

    This is what stops a small file that declares a huge dataset under a real weight name (or a wrong-shaped one)
    before it costs memory: the probes are zero-memory views, the module is built on the meta device."""
    if not h5.declared_only:
        raise ValueError("check_declared_shapes needs read_h5(path, declared_only=True)")
    spec = get_arch(arch)
    config = spec.configure(h5)
    try:
        module, state = _map_onto_skeleton(spec, h5, config, refuse=(ValueError, IndexError, KeyError))
    except KerasFormatError:
        raise
    except (ValueError, IndexError) as exc:  # a layout helper cannot take the declared shape (wrong rank, size)
        source = h5.last_taken
        what = f"dataset '{source}' declares shape {h5.declared_shape(source)}, which" if source else "a dataset"
        raise KerasFormatError(f"{h5.path}: {what} the {arch!r} layout cannot take ({exc}); the file does not "
                               "hold this architecture's weights (use the original .h5, or the right --arch)") \
            from None
    _check_complete(h5, arch, module, state)


def convert_h5_model(h5: H5Model, arch: str) -> tuple[nn.Module, dict, dict[str, torch.Tensor]]:
    """Map every tensor of ``h5`` onto the torch module of ``arch``; returns (module, config, state dict).

    Raises ``UnmappedTensorsError`` naming the file's tensors that no torch parameter takes or the torch
    parameters that no tensor fills.
    """
    spec = get_arch(arch)
    config = spec.configure(h5)
    module, state = _map_onto_skeleton(spec, h5, config, refuse=(ValueError, KeyError))
    if any(isinstance(v, torch.Tensor) and v.is_meta for v in state.values()):
        module = spec.build(config)  # the mapper copied values from the (meta) module: map onto a real one
        state = spec.map(h5, module, config)
    _check_complete(h5, arch, module, state)
    target = module.state_dict()
    tensors = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=target[k].dtype) for k, v in state.items()}
    for k in target:  # BatchNorm's num_batches_tracked
        if k not in tensors:
            tensors[k] = (torch.zeros(target[k].shape, dtype=target[k].dtype) if target[k].is_meta
                          else target[k].clone())
    module = _with_weights(spec, config, module, tensors)
    return module, config, tensors


def convert_keras(h5_path: str | os.PathLike, arch: str, out_path: str | os.PathLike) -> dict:
    """Convert ``h5_path`` (Keras model of ``arch``) into ``out_path`` (safetensors, written atomically).

    Returns a report: arch, source file and its sha256, tensor and parameter counts, the structure read from
    the file (``config``), and the output path.  Nothing is written when any tensor does not map.
    """
    from safetensors.torch import save_file

    from benchmarks_it_maps.home import atomic_file, sha256_file

    h5_path, out_path = Path(h5_path), Path(out_path)
    check_declared_shapes(read_h5(h5_path, declared_only=True), arch)  # every dataset, before any is read
    h5 = read_h5(h5_path)
    module, config, tensors = convert_h5_model(h5, arch)
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise KerasFormatError(f"{h5_path}: tensor(s) {broken[:5]} hold NaN or Inf values; nothing written (the "
                               "Keras weights are broken; export them again)")
    digest = sha256_file(h5_path)
    metadata = {"format": "pt", "arch": arch, "config": json.dumps(config), "source": h5_path.name,
                "source_sha256": digest, "keras_model": str(h5.name), "keras_version": str(h5.keras_version)}
    with atomic_file(out_path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    n_params = sum(p.numel() for p in module.parameters())
    report = {"arch": arch, "source": str(h5_path), "source_sha256": digest, "keras_model": h5.name,
              "keras_version": h5.keras_version, "tensors_in_file": h5.n_tensors, "tensors_mapped": h5.n_tensors,
              "state_dict_entries": len(tensors), "parameters": n_params, "config": config, "out": str(out_path)}
    log.info("converted %s (%s, %d tensors) -> %s", h5_path, arch, h5.n_tensors, out_path)
    return report


def load_converted(path: str | os.PathLike) -> nn.Module:
    """Rebuild the torch module from a safetensors file written by :func:`convert_keras` (eval mode)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "arch" not in meta or "config" not in meta:
        raise KerasFormatError(f"{path}: no 'arch'/'config' metadata; not written by convert_keras")
    spec, config = get_arch(meta["arch"]), json.loads(meta["config"])
    return _with_weights(spec, config, _build_skeleton(spec, config), load_file(str(path)))
