"""The final checkpoint folder of a harmonizer run (CONTRACTS.md section F), loadable with
``harmonized_models.load_model('harmonized:PATH')``::

    PATH/model.safetensors   state dict of the timm model
    PATH/model.json          {"architecture": timm name, "num_classes", "image_size", "mean", "std",
                              "top1" (fraction or null), "it_layer" (or null), "model_kwargs" (extra timm.create_model
                              arguments, e.g. img_size), ...provenance keys}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks_it_maps.home import atomic_dir

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
REQUIRED_KEYS = ("architecture", "num_classes", "image_size", "mean", "std", "top1", "it_layer")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the fix."""


def save_final(model: nn.Module, out_dir: str | os.PathLike, *, architecture: str, num_classes: int,
               image_size: int, mean, std, top1: float | None = None, it_layer: str | None = None,
               **extra: Any) -> Path:
    """Write ``model.safetensors`` + ``model.json`` atomically into ``out_dir``; returns the folder."""
    from safetensors.torch import save_file

    # clone: safetensors refuses tensors that share memory (tied weights)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"architecture": architecture, "num_classes": int(num_classes), "image_size": int(image_size),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "top1": None if top1 is None else float(top1), "it_layer": it_layer, **extra}
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"architecture": architecture})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp / WEIGHTS_FILE, 0o666 & ~mask)  # safetensors writes 0600 whatever the umask
    return Path(out_dir)


def read_meta(path: str | os.PathLike) -> dict:
    """``model.json`` of a checkpoint folder, checked for the contract's keys."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path}: not a harmonizer checkpoint folder (needs {META_FILE} and {WEIGHTS_FILE}); "
                              f"use the 'final' folder a `brainscore harmonize train` run wrote")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{meta_file}: invalid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_file}: expected a JSON object with keys {list(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{meta_file}: missing key(s) {missing}")
    return meta


def load_final(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the timm network of a checkpoint folder (eval mode) and return ``(network, meta)``."""
    import timm
    from safetensors.torch import load_file

    meta = read_meta(path)
    meta_file, weights_file = Path(path) / META_FILE, Path(path) / WEIGHTS_FILE
    kwargs = meta.get("model_kwargs", {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{meta_file}: field 'model_kwargs' must be an object of timm.create_model arguments, "
                              f"got {kwargs!r}")
    try:
        network = timm.create_model(meta["architecture"], pretrained=False, num_classes=meta["num_classes"],
                                    **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as error:  # unknown name, bad kwargs
        raise CheckpointError(f"{meta_file}: fields 'architecture'/'num_classes'/'model_kwargs' do not build a timm "
                              f"model ({type(error).__name__}: {_one_line(error)}); fix model.json") from None
    try:
        state = load_file(str(weights_file), device=str(device))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error type for every malformed file
        raise CheckpointError(f"{weights_file}: not a readable safetensors file ({type(error).__name__}: "
                              f"{_one_line(error)}); write it again with save_final") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{weights_file}: tensor(s) {bad[:5]} hold NaN or Inf values; the weights are "
                              "broken (a diverged training?), use an earlier checkpoint")
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"{weights_file}: does not match {meta['architecture']} ({_one_line(error)[:300]})") \
            from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{weights_file}: does not match {meta['architecture']} (missing "
                              f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
    return network.to(device).eval(), meta


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
