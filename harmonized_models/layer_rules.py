"""Default region -> layer commitments: one documented rule per architecture family, applied to a probed network.

The *units* of a network are its residual/transformer blocks, found by family:

==================  ==================================================  =====================================
family              units                                               examples
==================  ==================================================  =====================================
``resnet``          ``layer{1..4}.{j}``                                 ResNet, ResNeXt, SE/ECA-ResNet, Res2Net
``stages``          ``stages.{i}.blocks.{j}`` (or ``stages.{i}.{j}``)   ConvNeXt, MaxViT, CoAtNet, RegNetZ,
                                                                        NFNet, CSPNet, EdgeNeXt, LeViT, ...
``regnet``          ``s{1..4}.{j}``                                     RegNetX/Y
``mbconv``          ``blocks.{i}.{j}`` (stages of inverted residuals)   EfficientNet, MobileNetV3, MixNet
``isotropic``       ``blocks.{j}``                                      ViT, DeiT, BEiT, EVA, CaiT, XCiT
``vgg``             every ReLU of ``features``                          VGG
``densenet``        ``features.denseblock{i}`` / ``transition{i}``      DenseNet
``inception``       the top-level ``Mixed_*`` / ``repeat*`` modules     Inception v3, Inception-ResNet v2
==================  ==================================================  =====================================

A forward pass at the model's input size gives each unit's output resolution, hence its stride (input size /
map side, rounded to a power of two; token layers: side = sqrt(tokens without class/register tokens)). Then:

* **hierarchical** networks (the stride grows): V1 = last unit at stride <= 4, V2 = last unit at stride <= 8,
  IT = last unit at stride <= 16 (the end of the stride-16 stage: ResNet ``layer3``, ConvNeXt ``stages.2``,
  EfficientNet's last stride-16 block), V4 = the unit halfway between V2 and IT. A region with no unit at its
  stride takes the first unit. Stride-16 maps are 14 x 14 at 224 px, fine enough for the 9 x 9 and 17 x 17 grids.
* **isotropic** networks (one resolution throughout, e.g. ViTs): with depth D, V1/V2/V4/IT = block
  ceil(f * D) - 1 for f = 1/6, 1/3, 1/2, 3/4 (ViT-B/16: blocks 1, 3, 5, 8).

Candidate layers (scanned by ``brainscore layers`` / ``brainscore commit-layers``) are the units from V2 onwards,
thinned evenly to at most 16, always including IT. Units whose output is channels-last (N, H, W, C), which
Brain-Score would label wrongly, are never chosen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

REGIONS = ("V1", "V2", "V4", "IT")
MAX_CANDIDATES = 16
ISOTROPIC_FRACTIONS = {"V1": 1 / 6, "V2": 1 / 3, "V4": 1 / 2, "IT": 3 / 4}


@dataclass
class UnitInfo:
    name: str
    shape: tuple[int, ...]
    layout: str          # 'NCHW', 'tokens', 'NHWC' or 'other'
    side: int | None     # spatial map side (None when not spatial)


@dataclass
class LayerCommitment:
    family: str
    kind: str                          # 'hierarchical' or 'isotropic'
    region_layer_map: dict[str, str]
    candidate_layers: list[str]
    units: list[UnitInfo] = field(default_factory=list)


def _children(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return list(module.named_children())


def _is_sequence(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) > 0


def find_units(model: nn.Module) -> tuple[str, list[str]]:
    """The architecture family and the ordered unit (block) names of ``model``."""
    top = dict(_children(model))
    if all(f"layer{i}" in top for i in range(1, 5)):
        return "resnet", [f"layer{i}.{name}" for i in range(1, 5) for name, _ in _children(top[f"layer{i}"])]
    if all(f"s{i}" in top for i in range(1, 5)):
        return "regnet", [f"s{i}.{name}" for i in range(1, 5) for name, _ in _children(top[f"s{i}"])]
    if "stages" in top and _is_sequence(top["stages"]):
        units = []
        for i, stage in _children(top["stages"]):
            blocks = getattr(stage, "blocks", None)
            if isinstance(blocks, nn.Module) and _is_sequence(blocks):
                units += [f"stages.{i}.blocks.{j}" for j, _ in _children(blocks)]
            elif _is_sequence(stage):
                units += [f"stages.{i}.{j}" for j, _ in _children(stage)]
            else:
                units.append(f"stages.{i}")
        return "stages", units
    if "blocks" in top and _is_sequence(top["blocks"]):
        blocks = _children(top["blocks"])
        if all(_is_sequence(b) for _, b in blocks):
            return "mbconv", [f"blocks.{i}.{j}" for i, b in blocks for j, _ in _children(b)]
        return "isotropic", [f"blocks.{i}" for i, _ in blocks]
    if "_blocks" in top and _is_sequence(top["_blocks"]):  # lukemelas-style EfficientNet(-Lite)
        return "mbconv", [f"_blocks.{i}" for i, _ in _children(top["_blocks"])]
    if "features" in top:
        features = top["features"]
        names = [n for n, _ in _children(features)]
        if any(n.startswith("denseblock") for n in names):
            return "densenet", [f"features.{n}" for n in names if n.startswith(("denseblock", "transition"))]
        relus = [f"features.{n}" for n, m in _children(features) if isinstance(m, nn.ReLU)]
        if relus:
            return "vgg", relus
    mixed = [n for n in top if n.lower().startswith(("mixed", "repeat", "block8"))]
    if mixed:
        return "inception", mixed
    raise ValueError(f"no layer rule for {type(model).__name__}: none of the known block layouts "
                     f"(layer1-4, s1-4, stages, blocks, _blocks, features, Mixed_*) was found")


def _layout(shape: Sequence[int]) -> tuple[str, int | None]:
    if len(shape) == 4:
        _, a, b, c = shape
        if b == c:
            return "NCHW", b
        if a == b:
            return "NHWC", a
        return "other", None
    if len(shape) == 3:
        side = math.isqrt(shape[1])
        if side > 0 and shape[1] - side * side <= 8:
            return "tokens", side
    return "other", None


def probe_units(model: nn.Module, names: Sequence[str], image_size: int) -> list[UnitInfo]:
    """Run one random image through ``model`` (eval mode) and record each unit's output shape."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:
        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)
        handles.append(modules[name].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    units = []
    for name in names:
        if name in shapes:
            layout, side = _layout(shapes[name])
            units.append(UnitInfo(name, shapes[name], layout, side))
    return units


def _thin(names: list[str], keep: str, limit: int = MAX_CANDIDATES) -> list[str]:
    if len(names) <= limit:
        return names
    idx = sorted({round(i * (len(names) - 1) / (limit - 1)) for i in range(limit)} | {names.index(keep)})
    return [names[i] for i in idx]


def commit_layers(model: nn.Module, image_size: int) -> LayerCommitment:
    """Apply the family rule (module docstring) to ``model`` at ``image_size``."""
    family, names = find_units(model)
    probed = probe_units(model, names, image_size)
    units = [u for u in probed if u.layout in ("NCHW", "tokens")]
    if not units:
        raise ValueError(f"{type(model).__name__}: no block with a channels-first or token output among {names[:4]}...")
    sides = [u.side for u in units]
    if family == "isotropic" or len({u.side for u in probed}) == 1:
        depth = len(units)
        rlm = {r: units[max(0, math.ceil(f * depth) - 1)].name for r, f in ISOTROPIC_FRACTIONS.items()}
        kind, start = "isotropic", max(0, math.ceil(depth / 3) - 1)
    else:
        # nominal strides (powers of two), robust to 'valid' padding (Inception: 299 px -> 35, 17, 8)
        strides = [2 ** round(math.log2(image_size / s)) for s in sides]

        def last_at(limit: float) -> int:
            eligible = [i for i, s in enumerate(strides) if s <= limit]
            return eligible[-1] if eligible else 0
        i_v1, i_v2, i_it = last_at(4), last_at(8), last_at(16)
        if strides[i_it] < 16 and any(image_size / (u.side or 1) >= 12 for u in probed if u not in units):
            raise ValueError(f"{type(model).__name__}: its stride-16 blocks output channels-last maps (N, H, W, C), "
                             f"which Brain-Score would label wrongly; no default IT layer")
        i_v4 = (i_v2 + i_it + 1) // 2 if i_it > i_v2 else i_it
        rlm = {"V1": units[i_v1].name, "V2": units[i_v2].name, "V4": units[i_v4].name, "IT": units[i_it].name}
        kind, start = "hierarchical", i_v2
    candidates = _thin([u.name for u in units[start:]], rlm["IT"])
    return LayerCommitment(family, kind, rlm, candidates, units)


# --------------------------------------------------------------------------------------- behavioural readout layer
def classifier_module(model: nn.Module) -> tuple[str, nn.Module]:
    """The final classifier (the ``nn.Linear`` that produces the class scores) and its name.

    timm networks name it through ``get_classifier()``; otherwise it is the last ``nn.Linear`` (or 1 x 1 conv) in
    module order.
    """
    names = {id(module): name for name, module in model.named_modules()}
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        found = getter()
        found = found[0] if isinstance(found, (tuple, list)) else found
        if isinstance(found, nn.Module) and id(found) in names and not isinstance(found, nn.Identity):
            return names[id(found)], found
    linear = [(name, m) for name, m in model.named_modules()
              if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))]
    if not linear:
        raise ValueError(f"{type(model).__name__}: no classifier (nn.Linear) found for the behavioural readout")
    return linear[-1]


def behavioral_readout_layer(model: nn.Module, image_size: int) -> str:
    """The layer Brain-Score's behavioural tasks (probabilities, odd-one-out) read: the pre-logits features.

    Among the modules that run before the classifier (:func:`classifier_module`), outside it, the outermost one
    whose output holds exactly what the classifier reads (the same values up to a flatten), first in execution
    order: ``global_pool`` for ResNets, ``fc_norm`` for ViTs, ``head.norm`` for ConvNeXts. When no module outputs
    that tensor (the classifier reads a token of a module's output, e.g. DeiT-distilled's ``norm``, or a mean
    computed outside any module, e.g. LeViT), the module whose output the classifier input is a view of, else
    the last module that ran before the classifier. Without ``ModelCommitment(behavioral_readout_layer=...)``
    Brain-Score reads ``layers[-1]``, an early layer for our commitments (resnet50: ``layer1.2``).
    """
    classifier_name, classifier = classifier_module(model)
    outputs: list[tuple[str, torch.Tensor, int]] = []  # (name, output copy, storage address)
    seen: dict[str, torch.Tensor] = {}

    def pre_hook(_m, args):
        if "input" not in seen:
            seen["input"] = args[0].detach().clone()
            seen["storage"] = args[0].untyped_storage().data_ptr()

    handles = [classifier.register_forward_pre_hook(pre_hook)]
    for name, module in model.named_modules():
        if not name or name == classifier_name or name.startswith(classifier_name + ".") \
                or classifier_name.startswith(name + "."):
            continue  # the classifier itself and the modules that contain it

        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor) and "input" not in seen:  # only what ran before the classifier
                outputs.append((name, out.detach().clone(), out.untyped_storage().data_ptr()))
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if "input" not in seen or not outputs:
        raise ValueError(f"{type(model).__name__}: the classifier {classifier_name!r} did not run after any module")
    target = seen["input"].reshape(seen["input"].shape[0], -1)

    def same_values(out: torch.Tensor) -> bool:
        flat = out.reshape(out.shape[0], -1) if out.ndim and out.shape[0] == target.shape[0] else None
        return flat is not None and flat.shape == target.shape and torch.equal(flat, target)

    for test in (lambda out, ptr: same_values(out), lambda out, ptr: ptr == seen["storage"]):
        matches = [(name.count("."), order, name) for order, (name, out, ptr) in enumerate(outputs) if test(out, ptr)]
        if matches:
            return min(matches)[2]
    return max(((order, name) for order, (name, _, _) in enumerate(outputs) if "." not in name),
               default=(0, outputs[-1][0]))[1]
