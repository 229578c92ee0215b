"""keras-cv-attention-models (kecam 1.4.3) LeViT-128, ConvNeXt-Tiny and MaxViT-Tiny onto timm, tensor by tensor.

The released harmonized LeViT, ConvNeXt and MaxViT files were built with kecam (``LeViT128(use_distillation=False)``,
``ConvNeXtTiny()``, ``MaxViT_Tiny()``; PAPER_NOTES 5). Each has a timm twin with the *same* computation, so the
converter only re-lays tensors out; it never wraps or patches timm modules:

==================  =====================  ==================================================================
kecam model          timm architecture      what the mapping has to get right
==================  =====================  ==================================================================
``levit128``         ``levit_conv_128``     Dense (in, out) -> 1x1 conv (out, in, 1, 1) (or Linear for
                     (or ``levit_128``)     ``levit_128``); attention biases (N_k, heads) -> (heads, N_k): both
                                            index them by |drow| * W + |dcol|; kecam's stage-final downsample is
                                            timm's next-stage ``downsample``; BN eps 1e-5; no distill head in
                                            the released file (a file with one maps onto ``LevitDistilled``,
                                            whose eval logits are the mean of both heads, like kecam's deploy).
``convnext_tiny``    ``convnext_tiny``      4x4/2x2 convs HWIO -> OIHW, depthwise (7, 7, C, 1) -> (C, 1, 7, 7),
                                            Dense -> Linear, layer scale ``ChannelAffine`` weight -> ``gamma``,
                                            LayerNorm eps 1e-6, exact GELU.
``maxvit_tiny``      ``maxvit_tiny_tf_224`` TF 'same' padding (stem stride 2, depthwise stride 2), BN eps 1e-3,
                                            LN eps 1e-5, tanh-GELU, qkv 1x1 conv -> Linear with the (3, heads,
                                            dim) channel order (timm ``head_first=False``), relative position
                                            table (heads, 13*13) indexed by q - k -> timm ``bias_tf`` table
                                            (heads, 13, 13) indexed by k - q (both axes flipped), SE 1x1 convs,
                                            tanh pre-logits head.
==================  =====================  ==================================================================

Why ``levit_conv_128`` by default: it is the same network with the same parameters as ``levit_128`` (timm ships both
with the same pretrained weights), but keeps every intermediate feature map as NCHW, so the spatial IT-map benchmarks
can read any layer as a map; ``levit_128`` outputs token sequences, which Brain-Score packages as non-spatial
``channel``/``embedding`` activations.

Registration: importing this module adds the archs ``levit128`` (-> ``levit_conv_128``), ``levit_128`` (Linear
LeViT), ``levit_conv_128``, ``convnext_tiny``, ``maxvit_tiny`` and ``maxvit_tiny_tf_224`` to
:data:`harmonized_models.keras.convert.ARCHS`, so ``convert_keras(h5, "maxvit_tiny", out)`` works; the structure
config stored with a conversion is ``{"timm_arch": ...}`` (plus ``"distilled"`` for LeViT).

Checked against kecam 1.3.0 and 1.3.10 (the versions current when the files were released; the Harmonization
repository does not pin one): same layer and weight names, table shapes and index formulas for these three models.

Input to every mapper: ``weights`` = {keras layer name: {weight name without the layer prefix or ``:0`` suffix
(``kernel``, ``bias``, ``gamma``, ...): ndarray}} and the file's ``model_config`` (dict), used to check the
normalisation epsilons and the architecture name. Output: a timm state dict; every tensor in the file must be used
exactly once and every timm parameter/buffer must be filled, otherwise :class:`UnmappedTensorsError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import torch

from .h5 import UnmappedTensorsError, contiguous, is_probe  # shared with convert.py (a KerasFormatError subclass)

LayerWeights = Mapping[str, Mapping[str, np.ndarray]]

__all__ = ["KECAM_ARCHS", "KecamArch", "KecamMapping", "UnmappedTensorsError", "build_timm", "map_weights",
           "map_levit", "map_convnext", "map_maxvit", "detect_arch", "timm_arch", "layer_weights"]


class KecamMapping(NamedTuple):
    """Result of :func:`map_weights`."""

    model: torch.nn.Module                # timm model, eval mode, state dict loaded (strict)
    state_dict: dict[str, torch.Tensor]   # timm key -> tensor (what a converter saves)
    sources: dict[str, str]               # timm key -> 'keras_layer/weight' it came from (num_batches_tracked: '')


@dataclass(frozen=True)
class KecamArch:
    """One kecam architecture and how to rebuild it in timm."""

    keras_name: str        # model_config name written by kecam ('levit128', ...)
    timm_name: str         # default timm architecture
    mapper: Callable[..., tuple[dict[str, torch.Tensor], dict[str, str]]]
    timm_alternatives: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------------------
# tensor layout helpers (Keras -> PyTorch)

def conv_kernel(kernel: np.ndarray) -> np.ndarray:
    """Conv2D kernel (kh, kw, cin, cout) -> (cout, cin, kh, kw)."""
    _expect_ndim(kernel, 4, "Conv2D kernel")
    return contiguous(kernel.transpose(3, 2, 0, 1))


def depthwise_kernel(kernel: np.ndarray) -> np.ndarray:
    """DepthwiseConv2D kernel (kh, kw, C, multiplier=1) -> grouped conv weight (C, 1, kh, kw)."""
    _expect_ndim(kernel, 4, "DepthwiseConv2D kernel")
    if kernel.shape[3] != 1:
        raise _LayoutError(f"depth multiplier {kernel.shape[3]} is not supported (timm uses 1)")
    return contiguous(kernel.transpose(2, 3, 0, 1))


def dense_kernel(kernel: np.ndarray) -> np.ndarray:
    """Dense kernel (in, out) -> Linear weight (out, in)."""
    _expect_ndim(kernel, 2, "Dense kernel")
    return contiguous(kernel.T)


def pointwise_as_linear(kernel: np.ndarray) -> np.ndarray:
    """1x1 Conv2D kernel (1, 1, in, out) -> Linear weight (out, in)."""
    _expect_ndim(kernel, 4, "1x1 Conv2D kernel")
    if kernel.shape[:2] != (1, 1):
        raise _LayoutError(f"expected a 1x1 conv kernel, got shape {kernel.shape}")
    return contiguous(kernel[0, 0].T)


def dense_as_pointwise(kernel: np.ndarray) -> np.ndarray:
    """Dense kernel (in, out) applied per position -> 1x1 conv weight (out, in, 1, 1)."""
    return dense_kernel(kernel)[:, :, None, None]


def levit_attention_biases(table: np.ndarray) -> np.ndarray:
    """kecam MultiHeadPositionalEmbedding (N_k, heads) -> timm ``attention_biases`` (heads, N_k).

    Both index the table by |drow| * W_k + |dcol| (kecam: ``x + y * k_blocks_h`` with np.meshgrid 'xy' order, i.e.
    x = column; timm: ``rel[0] * resolution[1] + rel[1]`` with ndgrid 'ij' order), with queries taken at stride
    ``s`` in the downsampling attention in both, so only the axes swap.
    """
    _expect_ndim(table, 2, "LeViT positional embedding")
    return contiguous(table.T)


def maxvit_relative_table(table: np.ndarray) -> np.ndarray:
    """kecam MultiHeadRelativePositionalEmbedding (heads, (2h-1)(2w-1)) -> timm RelPosBiasTf (heads, 2h-1, 2w-1).

    kecam gathers ``table[:, (dr + h - 1) * (2w - 1) + (dc + w - 1)]`` with (dr, dc) = query - key (its np.meshgrid
    'xy' order makes its "hh" axis the column); timm's ``bias_tf`` looks up ``table[:, kr - qr + h - 1,
    kc - qc + w - 1]``. So: reshape row-major to (heads, 2h-1, 2w-1) and reverse both offset axes.
    """
    _expect_ndim(table, 2, "MaxViT relative position table")
    heads, n = table.shape
    side = int(round(n ** 0.5))
    if side * side != n or side % 2 == 0:
        raise _LayoutError(f"relative position table of {n} entries is not (2w-1)^2 for a square window")
    return contiguous(table.reshape(heads, side, side)[:, ::-1, ::-1])


class _LayoutError(UnmappedTensorsError):
    """A layout helper cannot take a tensor's shape (re-raised naming the dataset, see :func:`_map_weights`)."""


def _expect_ndim(array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise _LayoutError(f"{what} must have {ndim} dimensions, got shape {tuple(array.shape)}")


# --------------------------------------------------------------------------------------------------------------
# bookkeeping: every Keras tensor used once, every timm tensor filled once, epsilons checked

#: (dataset 'layer/weight', its shape) of the latest tensor a mapper took: names the dataset when a layout helper
#: cannot take its shape (the mappers are single-threaded, like the converter).
_LAST_TAKEN: list[tuple[str, tuple[int, ...]] | None] = [None]


class _Mapper:
    """Collects timm tensors from Keras layers and remembers which layers were used."""

    def __init__(self, weights: LayerWeights, model_config: Mapping[str, Any] | None):
        self.weights = {layer: dict(ws) for layer, ws in weights.items() if len(ws)}
        self.used: set[tuple[str, str]] = set()
        self.out: dict[str, np.ndarray] = {}
        self.sources: dict[str, str] = {}
        self._last: str = ""
        self.norm_pairs: list[tuple[str, str]] = []  # (keras layer, timm module path) for epsilon checks
        self.layer_configs = _layer_configs(model_config)

    def has(self, layer: str) -> bool:
        return layer in self.weights

    def take(self, layer: str, name: str) -> np.ndarray:
        try:
            value = self.weights[layer][name]
        except KeyError:
            have = sorted(self.weights.get(layer, {}))
            raise UnmappedTensorsError(
                f"expected tensor {layer}/{name} is missing from the file (layer has {have or 'no weights'})") from None
        if (layer, name) in self.used:
            raise UnmappedTensorsError(f"tensor {layer}/{name} would be used twice")
        self.used.add((layer, name))
        self._last = f"{layer}/{name}"
        _LAST_TAKEN[0] = (self._last, tuple(np.shape(value)))
        return np.asarray(value)

    def put(self, key: str, value: np.ndarray) -> None:
        if key in self.out:
            raise UnmappedTensorsError(f"timm tensor {key} would be filled twice")
        self.out[key] = np.asarray(value, dtype=np.float32)
        self.sources[key] = self._last

    # layer kinds ------------------------------------------------------------------------------------------------
    def conv(self, layer: str, prefix: str, bias: bool | None = None) -> None:
        self.put(f"{prefix}.weight", conv_kernel(self.take(layer, "kernel")))
        self._bias(layer, prefix, bias)

    def depthwise(self, layer: str, prefix: str, bias: bool | None = None) -> None:
        self.put(f"{prefix}.weight", depthwise_kernel(self.take(layer, "depthwise_kernel")))
        self._bias(layer, prefix, bias)

    def dense(self, layer: str, prefix: str, bias: bool | None = None, as_conv: bool = False) -> None:
        kernel = self.take(layer, "kernel")
        self.put(f"{prefix}.weight", dense_as_pointwise(kernel) if as_conv else dense_kernel(kernel))
        self._bias(layer, prefix, bias)

    def pointwise_linear(self, layer: str, prefix: str, bias: bool | None = None) -> None:
        self.put(f"{prefix}.weight", pointwise_as_linear(self.take(layer, "kernel")))
        self._bias(layer, prefix, bias)

    def batchnorm(self, layer: str, prefix: str) -> None:
        for src, dst in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                         ("moving_variance", "running_var")):
            self.put(f"{prefix}.{dst}", self.take(layer, src))
        self.norm_pairs.append((layer, prefix))

    def layernorm(self, layer: str, prefix: str) -> None:
        self.put(f"{prefix}.weight", self.take(layer, "gamma"))
        self.put(f"{prefix}.bias", self.take(layer, "beta"))
        self.norm_pairs.append((layer, prefix))

    def _bias(self, layer: str, prefix: str, bias: bool | None) -> None:
        present = "bias" in self.weights.get(layer, {})
        if bias is None:
            bias = present
        if bias:
            self.put(f"{prefix}.bias", self.take(layer, "bias"))

    # checks ----------------------------------------------------------------------------------------------------
    def finish(self, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Refuse leftovers on either side and epsilon mismatches; return the state dict as torch tensors."""
        unused = sorted(f"{layer}/{name}" for layer, ws in self.weights.items() for name in ws
                        if (layer, name) not in self.used)
        if unused:
            raise UnmappedTensorsError(
                f"{len(unused)} tensor(s) in the file have no place in timm {type(model).__name__}: "
                f"{_abbrev(unused)}")
        expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        missing = sorted(set(expected) - set(self.out))
        extra = sorted(set(self.out) - set(expected))
        if missing or extra:
            raise UnmappedTensorsError(f"timm tensors not filled: {_abbrev(missing)}; unknown targets: {_abbrev(extra)}")
        for key, value in self.out.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                source = self.sources.get(key, "?")
                layer, _, name = source.partition("/")
                declared = tuple(np.shape(self.weights.get(layer, {}).get(name)))
                raise UnmappedTensorsError(
                    f"dataset '{source}' declares shape {declared}, which gives timm {key} the shape "
                    f"{tuple(value.shape)} but the architecture expects {tuple(expected[key].shape)}; the file does "
                    "not hold this architecture's weights (use the original .h5, or the right --arch)")
        self._check_epsilons(model)
        # (a dry run on declared shapes, see h5.probe, gets meta tensors: nothing is allocated)
        state = {k: torch.empty(v.shape, device="meta") if is_probe(v) else torch.from_numpy(np.ascontiguousarray(v))
                 for k, v in self.out.items()}
        for key, value in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                state[key] = torch.zeros(value.shape, dtype=value.dtype)  # (value may be on the meta device)
                self.sources[key] = ""
        return state, self.sources

    def _check_epsilons(self, model: torch.nn.Module) -> None:
        if not self.layer_configs:
            return
        modules = dict(model.named_modules())
        for layer, prefix in self.norm_pairs:
            cfg = self.layer_configs.get(layer)
            if cfg is None or "epsilon" not in cfg:
                continue
            eps = float(modules[prefix].eps)
            if not np.isclose(float(cfg["epsilon"]), eps, rtol=1e-6, atol=0):
                raise UnmappedTensorsError(
                    f"normalisation epsilon of {layer} is {cfg['epsilon']} in the file but {eps} in timm {prefix}")


def _layer_configs(model_config: Mapping[str, Any] | None) -> dict[str, dict]:
    if not model_config:
        return {}
    layers = model_config.get("config", {}).get("layers", [])
    return {layer.get("config", {}).get("name", layer.get("name")): layer.get("config", {}) for layer in layers}


def _abbrev(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "") if items else "none"


def _indices(weights: LayerWeights, pattern: str) -> list[tuple[int, ...]]:
    """Sorted integer groups of every layer name matching ``pattern`` (a regex with integer groups)."""
    found = set()
    for layer in weights:
        match = re.fullmatch(pattern, layer)
        if match:
            found.add(tuple(int(g) for g in match.groups()))
    return sorted(found)


# --------------------------------------------------------------------------------------------------------------
# LeViT

def map_levit(weights: LayerWeights, model: torch.nn.Module, model_config: Mapping[str, Any] | None = None
              ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """kecam LeViT -> timm ``levit_*`` (Linear) or ``levit_conv_*`` (1x1 conv); distill head if the file has one."""
    m = _Mapper(weights, model_config)
    as_conv = bool(getattr(model, "use_conv", False))
    for i in range(1, 5):
        m.conv(f"stem_{i}_conv", f"stem.conv{i}.linear", bias=False)
        m.batchnorm(f"stem_{i}_bn", f"stem.conv{i}.bn")

    def linear_norm(layer: str, prefix: str) -> None:
        m.dense(layer, f"{prefix}.linear", bias=False, as_conv=as_conv)
        m.batchnorm(f"{layer}_bn", f"{prefix}.bn")

    def mlp(src: str, dst: str) -> None:
        m.dense(f"{src}mlp_1_dense", f"{dst}.ln1.linear", bias=False, as_conv=as_conv)
        m.batchnorm(f"{src}mlp_1_bn", f"{dst}.ln1.bn")
        m.dense(f"{src}mlp_2_dense", f"{dst}.ln2.linear", bias=False, as_conv=as_conv)
        m.batchnorm(f"{src}mlp_2_bn", f"{dst}.ln2.bn")

    for stack, block in _indices(weights, r"stack(\d+)_block(\d+)_qkv"):
        src, dst = f"stack{stack}_block{block}_", f"stages.{stack - 1}.blocks.{block - 1}"
        linear_norm(f"{src}qkv", f"{dst}.attn.qkv")
        m.put(f"{dst}.attn.attention_biases", levit_attention_biases(m.take(f"{src}attn_pos", "positional_embedding")))
        linear_norm(f"{src}out", f"{dst}.attn.proj.ln")
        mlp(src, f"{dst}.mlp")
    for (stack,) in _indices(weights, r"stack(\d+)_downsample_q"):
        # kecam downsamples at the end of stack s; timm at the start of stage s (0-based index s)
        src, dst = f"stack{stack}_downsample_", f"stages.{stack}.downsample"
        linear_norm(f"{src}q", f"{dst}.attn_downsample.q.ln")
        linear_norm(f"{src}kv", f"{dst}.attn_downsample.kv")
        m.put(f"{dst}.attn_downsample.attention_biases",
              levit_attention_biases(m.take(f"{src}attn_pos", "positional_embedding")))
        linear_norm(f"{src}out", f"{dst}.attn_downsample.proj.ln")
        mlp(src, f"{dst}.mlp")
    m.batchnorm("head_bn", "head.bn")
    m.dense("head", "head.linear", bias=True)
    if m.has("distill_head"):
        m.batchnorm("distill_head_bn", "head_dist.bn")
        m.dense("distill_head", "head_dist.linear", bias=True)
    return m.finish(model)


# --------------------------------------------------------------------------------------------------------------
# ConvNeXt

def map_convnext(weights: LayerWeights, model: torch.nn.Module, model_config: Mapping[str, Any] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """kecam ConvNeXt (v1) -> timm ``convnext_*``."""
    m = _Mapper(weights, model_config)
    m.conv("stem_conv", "stem.0", bias=True)
    m.layernorm("stem_ln", "stem.1")
    for (stack,) in _indices(weights, r"stack(\d+)_downsample_conv"):
        m.layernorm(f"stack{stack}_downsample_ln", f"stages.{stack - 1}.downsample.0")
        m.conv(f"stack{stack}_downsample_conv", f"stages.{stack - 1}.downsample.1", bias=True)
    for stack, block in _indices(weights, r"stack(\d+)_block(\d+)_dw_conv"):
        src, dst = f"stack{stack}_block{block}_", f"stages.{stack - 1}.blocks.{block - 1}"
        m.depthwise(f"{src}dw_conv", f"{dst}.conv_dw", bias=True)
        m.layernorm(f"{src}ln", f"{dst}.norm")
        m.dense(f"{src}up_dense", f"{dst}.mlp.fc1", bias=True)
        m.dense(f"{src}down_dense", f"{dst}.mlp.fc2", bias=True)
        if m.has(f"{src}gamma"):  # layer scale (ChannelAffine without bias)
            m.put(f"{dst}.gamma", m.take(f"{src}gamma", "weight"))
    m.layernorm("head_ln", "head.norm")
    m.dense("predictions", "head.fc", bias=True)
    return m.finish(model)


# --------------------------------------------------------------------------------------------------------------
# MaxViT

_MBCONV = (("preact_bn", "pre_norm", "bn"), ("expand_conv", "conv1_1x1", "conv"), ("expand_bn", "norm1", "bn"),
           ("MB_dw_conv", "conv2_kxk", "dw"), ("MB_dw_bn", "norm2", "bn"), ("se/1_conv", "se.fc1", "conv"),
           ("se/2_conv", "se.fc2", "conv"), ("MB_pw_conv", "conv3_1x1", "conv"))


def map_maxvit(weights: LayerWeights, model: torch.nn.Module, model_config: Mapping[str, Any] | None = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """kecam MaxViT (TF mode) -> timm ``maxvit_*_tf_*``."""
    m = _Mapper(weights, model_config)
    m.conv("stem_1_conv", "stem.conv1", bias=True)
    m.batchnorm("stem_1_bn", "stem.norm1")
    m.conv("stem_2_conv", "stem.conv2", bias=True)
    for stack, block in _indices(weights, r"stack_(\d+)_block_(\d+)/mbconv/preact_bn"):
        src, dst = f"stack_{stack}_block_{block}/", f"stages.{stack - 1}.blocks.{block - 1}"
        if m.has(f"{src}mbconv/shortcut_conv"):
            m.conv(f"{src}mbconv/shortcut_conv", f"{dst}.conv.shortcut.expand", bias=True)
        for keras, timm_name, kind in _MBCONV:
            layer, prefix = f"{src}mbconv/{keras}", f"{dst}.conv.{timm_name}"
            {"bn": m.batchnorm, "conv": m.conv, "dw": m.depthwise}[kind](layer, prefix)
        for kind, timm_block in (("block", "attn_block"), ("grid", "attn_grid")):
            s, d = f"{src}{kind}_", f"{dst}.{timm_block}"
            m.layernorm(f"{s}attn_preact_ln", f"{d}.norm1")
            m.pointwise_linear(f"{s}window_mhsa/qkv_conv", f"{d}.attn.qkv")
            m.put(f"{d}.attn.rel_pos.relative_position_bias_table",
                  maxvit_relative_table(m.take(f"{s}window_mhsa/pos_emb", "positional_embedding")))
            m.dense(f"{s}window_mhsa/output", f"{d}.attn.proj")
            m.layernorm(f"{s}ffn_preact_ln", f"{d}.norm2")
            m.dense(f"{s}ffn/1_dense", f"{d}.mlp.fc1")
            m.dense(f"{s}ffn/2_dense", f"{d}.mlp.fc2")
            for i in (1, 2):  # layer scale, absent in MaxViT_Tiny (layer_scale=-1); timm calls it ls1/ls2
                if m.has(f"{src}{kind}_{i}_gamma"):
                    m.put(f"{d}.ls{i}.gamma", m.take(f"{src}{kind}_{i}_gamma", "weight"))
    m.layernorm("post_ln", "head.norm")
    m.dense("features", "head.pre_logits.fc")
    m.dense("predictions", "head.fc")
    return m.finish(model)


# --------------------------------------------------------------------------------------------------------------
# registry and entry points

KECAM_ARCHS: dict[str, KecamArch] = {
    "levit128": KecamArch("levit128", "levit_conv_128", map_levit, ("levit_128",)),
    "convnext_tiny": KecamArch("convnext_tiny", "convnext_tiny", map_convnext),
    "maxvit_tiny": KecamArch("maxvit_tiny", "maxvit_tiny_tf_224", map_maxvit),
}
TIMM_ARCHS: dict[str, str] = {name: key for key, arch in KECAM_ARCHS.items()
                              for name in (arch.timm_name, *arch.timm_alternatives)}


def timm_arch(arch: str) -> str:
    """timm architecture for a kecam model name ('maxvit_tiny') or a supported timm name (returned unchanged)."""
    if arch in KECAM_ARCHS:
        return KECAM_ARCHS[arch].timm_name
    if arch in TIMM_ARCHS:
        return arch
    raise KeyError(f"unknown kecam architecture {arch!r}; known: {sorted(KECAM_ARCHS)} or timm {sorted(TIMM_ARCHS)}")


def detect_arch(model_config: Mapping[str, Any] | None) -> str | None:
    """kecam model name written in a file's ``model_config`` ('levit128', ...), if it is one of ours."""
    if not model_config:
        return None
    name = model_config.get("config", {}).get("name")
    return name if name in KECAM_ARCHS else None


def build_timm(arch: str, distilled: bool = False) -> torch.nn.Module:
    """Random-weight timm model (``pretrained=False``, eval mode) for a kecam or supported timm architecture name.

    ``distilled`` adds LeViT's distillation head (``LevitDistilled``); the released LeViT has none.
    """
    import timm

    name = timm_arch(arch)
    kwargs: dict[str, Any] = {"distilled": bool(distilled)} if TIMM_ARCHS[name] == "levit128" else {}
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def layer_weights(source: Any) -> tuple[dict[str, dict[str, np.ndarray]], dict | None]:
    """(weights by layer, model_config) from an ``H5Model`` (``harmonized_models.keras.h5``) or a plain dict."""
    if hasattr(source, "layers") and hasattr(source, "take"):
        return {layer.name: dict(layer.weights) for layer in source.layers if layer.weights}, source.model_config
    return {name: dict(ws) for name, ws in source.items() if len(ws)}, None


def map_weights(arch: str, source: Any, model_config: Mapping[str, Any] | None = None,
                model: torch.nn.Module | None = None) -> KecamMapping:
    """Build the timm model for ``arch`` (kecam or timm name) and map the file's tensors onto it.

    ``source`` is an ``H5Model`` from ``read_h5`` (its ``model_config`` is used to check the architecture name and
    the normalisation epsilons, and every mapped tensor is marked taken, so ``H5Model.unused()`` is empty afterwards)
    or a plain {layer: {weight: ndarray}} dict. A ``model`` passed in is filled in place, unless it is a
    meta-device skeleton (then only the state dict is computed; ``convert.py`` loads it with ``assign=True``). Raises :class:`UnmappedTensorsError` unless the file's tensors and
    the timm model's correspond one to one (shapes included) and the epsilons agree.
    """
    try:
        return _map_weights(arch, source, model_config, model)
    except UnmappedTensorsError as exc:
        path = getattr(source, "path", None)
        if path is None or str(exc).startswith(str(path)):
            raise
        raise UnmappedTensorsError(f"{path}: {exc}") from None


def _map_weights(arch: str, source: Any, model_config: Mapping[str, Any] | None,
                 model: torch.nn.Module | None) -> KecamMapping:
    weights, file_config = layer_weights(source)
    model_config = model_config if model_config is not None else file_config
    name = timm_arch(arch)
    spec = KECAM_ARCHS[TIMM_ARCHS[name]]
    found = model_config.get("config", {}).get("name") if model_config else None
    if found is not None and found != spec.keras_name:
        raise UnmappedTensorsError(f"the file holds Keras model {found!r}, not kecam {spec.keras_name!r} "
                                   f"(needed for {name})")
    if model is None:
        model = build_timm(name, distilled="distill_head" in weights)
    _LAST_TAKEN[0] = None
    try:
        state, sources = spec.mapper(weights, model, model_config)
    except (_LayoutError, IndexError) as exc:  # name the dataset whose shape the layout cannot take
        if _LAST_TAKEN[0] is None:
            raise
        source, shape = _LAST_TAKEN[0]
        raise UnmappedTensorsError(f"dataset '{source}' declares shape {shape}, which the {name} layout cannot take "
                                   f"({exc}); the file does not hold this architecture's weights (use the original "
                                   ".h5, or the right --arch)") from None
    if not any(t.is_meta for t in model.state_dict().values()):  # a meta skeleton is materialised by the caller
        model.load_state_dict(state, strict=True)
    if hasattr(source, "take"):  # the mapper used every tensor exactly once: record that in the H5Model
        _check_convs(source, model, sources)
        for layer, ws in weights.items():
            for wname, value in ws.items():
                source.take(layer, wname, shape=value.shape)
    return KecamMapping(model.eval(), state, sources)


def _check_convs(h5: Any, model: torch.nn.Module, sources: Mapping[str, str]) -> None:
    """Refuse a Keras conv whose stride, dilation or padding the timm conv does not reproduce (TF 'same' with
    stride 2 needs timm's dynamic 'same' padding; kecam's ZeroPadding2D + 'valid' needs the same static padding)."""
    from .convert import check_conv

    modules = dict(model.named_modules())
    for key, src in sources.items():
        layer = src.rsplit("/", 1)[0]
        module = modules.get(key.rsplit(".", 1)[0])
        if key.endswith(".weight") and isinstance(module, torch.nn.Conv2d) and h5.has_layer(layer) \
                and h5.layer(layer).base_class in ("Conv2D", "DepthwiseConv2D"):
            check_conv(h5, h5.layer(layer), module)


# --------------------------------------------------------------------------------------------------------------
# registration in harmonized_models.keras.convert (convert_keras / load_converted / brainscore convert-keras)

def _register() -> None:
    from .convert import ArchSpec, register_arch

    def make(arch: str) -> ArchSpec:
        timm_name = timm_arch(arch)

        def configure(h5: Any) -> dict:
            if TIMM_ARCHS[timm_name] == "levit128":
                return {"timm_arch": timm_name, "distilled": h5.has_layer("distill_head")}
            return {"timm_arch": timm_name}

        def build(config: dict) -> torch.nn.Module:
            return build_timm(config["timm_arch"], distilled=bool(config.get("distilled", False)))

        def map_(h5: Any, module: torch.nn.Module, config: dict) -> dict[str, torch.Tensor]:
            return map_weights(config["timm_arch"], h5, model=module).state_dict

        keras_name = KECAM_ARCHS[TIMM_ARCHS[timm_name]].keras_name
        return ArchSpec(arch, configure, build, map_, f"kecam 1.4.3 {keras_name} -> timm {timm_name}")

    for arch in (*KECAM_ARCHS, *TIMM_ARCHS):
        register_arch(make(arch))


_register()
