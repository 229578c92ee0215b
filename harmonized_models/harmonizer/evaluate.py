"""ClickMe alignment and ImageNet accuracy of a model, as the Harmonization reference evaluates them.

Reference: ``serre-lab/Harmonization`` ``evaluation/click_me.py`` and ``metrics.py`` (PAPER_NOTES section 4):
saliency = Xplique ``Saliency`` = max over colour channels of |d true-class logit / d input| (model in inference
mode); per image, Spearman rho between saliency and the preprocessed human map; alignment score = mean rho / 0.65753
(the human ceiling); Dice and IoU of the maps binarised at their top 10 % (strictly above the 90th percentile).

Train/eval difference (PAPER_NOTES 6.13, kept as the reference): training aligns the *signed, channel-averaged*
gradient (``loss.saliency``), evaluation scores the *channel-max absolute* gradient (:func:`evaluation_saliency`).
Images whose human map (or saliency) is constant have an undefined rho; the reference would return NaN for the whole
score, we leave them out of the mean and report how many there were (``n_undefined``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from tqdm.auto import tqdm

from benchmarks_it_maps.home import atomic_file, save_figure

from .clickme import ClickMeDataset, open_clickme
from .data import eval_transform, imagenet_folder

log = logging.getLogger(__name__)

#: Spearman ceiling of human ClickMe maps (reference ``HUMAN_SPEARMAN_CEILING``).
HUMAN_SPEARMAN_CEILING = 0.6575315343478081
#: Maps are binarised at their top 10 % for Dice and IoU.
TOP_PERCENT = 10
_EPSILON = 1e-9


@dataclass
class Preprocessing:
    """How a network expects its input."""
    image_size: int = 224
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"


def evaluation_saliency(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]``: max over channels of |gradient of the true-class logit w.r.t. the input| (no graph kept)."""
    inputs = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        (grad,) = torch.autograd.grad(logits.gather(1, labels.long()[:, None]).sum(), inputs)
    return grad.abs().amax(dim=1)


def spearman_per_map(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
    """Spearman rho between corresponding maps ``[N, H, W]`` (average ranks for ties, as scipy); NaN where a map
    is constant."""
    a = rankdata(np.asarray(maps_a, dtype=np.float64).reshape(len(maps_a), -1), axis=1)
    b = rankdata(np.asarray(maps_b, dtype=np.float64).reshape(len(maps_b), -1), axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


def _top_masks(maps: np.ndarray, percent: float) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float32)
    thresholds = np.percentile(maps.reshape(len(maps), -1), 100 - percent, axis=1)
    return maps > thresholds[:, None, None]


def dice_per_map(maps_a: np.ndarray, maps_b: np.ndarray, percent: float = TOP_PERCENT) -> np.ndarray:
    """Sorensen-Dice of the top-``percent`` % masks: 2 |A and B| / (|A| + |B| + 1e-9)."""
    a, b = _top_masks(maps_a, percent), _top_masks(maps_b, percent)
    return 2.0 * (a & b).sum(axis=(1, 2)) / (a.sum(axis=(1, 2)) + b.sum(axis=(1, 2)) + _EPSILON)


def iou_per_map(maps_a: np.ndarray, maps_b: np.ndarray, percent: float = TOP_PERCENT) -> np.ndarray:
    """Intersection over union of the top-``percent`` % masks: |A and B| / (|A or B| + 1e-9)."""
    a, b = _top_masks(maps_a, percent), _top_masks(maps_b, percent)
    return (a & b).sum(axis=(1, 2)) / ((a | b).sum(axis=(1, 2)) + _EPSILON)


def alignment_scores(saliency_maps: np.ndarray, human_maps: np.ndarray) -> dict[str, Any]:
    """Summary of per-image Spearman, Dice and IoU; ``alignment`` = mean rho / :data:`HUMAN_SPEARMAN_CEILING`."""
    return _summary(spearman_per_map(saliency_maps, human_maps), dice_per_map(saliency_maps, human_maps),
                    iou_per_map(saliency_maps, human_maps))


def _summary(rho: np.ndarray, dice: np.ndarray, iou: np.ndarray) -> dict[str, Any]:
    defined = ~np.isnan(rho)
    spearman = float(rho[defined].mean()) if defined.any() else float("nan")
    return {"alignment": spearman / HUMAN_SPEARMAN_CEILING, "spearman": spearman, "dice": float(dice.mean()),
            "iou": float(iou.mean()), "n": int(len(rho)), "n_undefined": int((~defined).sum()),
            "per_image": {"spearman": rho.tolist(), "dice": dice.tolist(), "iou": iou.tolist()}}


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def clickme_alignment(network: nn.Module, dataset: ClickMeDataset, *, batch_size: int = 32,
                      device: str | torch.device = "auto", workers: int = 0, progress: bool = True,
                      return_maps: int = 0) -> dict[str, Any]:
    """Score a network's saliency against the human maps of ``dataset`` (see :func:`alignment_scores`).
    ``return_maps=k`` also returns the first k (image, human map, saliency) triples for plotting."""
    device = _device(device)
    network = network.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    rho, dice, iou, examples = [], [], [], []
    for images, maps, labels in tqdm(loader, desc="ClickMe alignment", disable=not progress):
        sal = evaluation_saliency(network, images.to(device), labels.to(device)).float().cpu().numpy()
        human = maps.numpy()  # per batch: the validation maps never sit in memory all at once
        rho.append(spearman_per_map(sal, human))
        dice.append(dice_per_map(sal, human))
        iou.append(iou_per_map(sal, human))
        if len(examples) < return_maps:
            examples += list(zip(images.numpy(), human, sal))[:return_maps - len(examples)]
    result = _summary(np.concatenate(rho), np.concatenate(dice), np.concatenate(iou))
    if return_maps:
        result["examples"] = examples
    return result


@torch.inference_mode()
def imagenet_top1(network: nn.Module, folder: str | os.PathLike, *, image_size: int, mean, std,
                  crop_pct: float = 0.875, interpolation: str = "bilinear", batch_size: int = 64,
                  device: str | torch.device = "auto", workers: int = 0, progress: bool = True) -> float:
    """Top-1 accuracy (fraction) on an ImageFolder validation set (class index = sorted folder order)."""
    device = _device(device)
    dataset = imagenet_folder(folder, eval_transform(image_size, mean, std, crop_pct, interpolation))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    was_training = network.training
    network = network.to(device).eval()
    correct = total = 0
    for images, labels in tqdm(loader, desc="ImageNet top-1", disable=not progress):
        logits = network(images.to(device))
        correct += int((logits.argmax(1).cpu() == labels).sum())
        total += len(labels)
    network.train(was_training)
    return correct / max(total, 1)


def _preprocessing_from(obj: Any) -> Preprocessing:
    get = (lambda k, d: obj.get(k, d)) if isinstance(obj, dict) else (lambda k, d: getattr(obj, k, d))
    default = Preprocessing()
    size = get("image_size", None) or get("input_size", (3, default.image_size))
    return Preprocessing(image_size=int(size[-1] if isinstance(size, (tuple, list)) else size),
                         mean=tuple(get("mean", default.mean)), std=tuple(get("std", default.std)),
                         crop_pct=float(get("crop_pct", None) or default.crop_pct),
                         interpolation=str(get("interpolation", None) or default.interpolation))


def load_network(identifier: str, pretrained: bool = True) -> tuple[nn.Module, Preprocessing]:
    """A network and its preprocessing from ``harmonized:PATH`` (a harmonizer checkpoint folder), a registered
    model identifier (``harmonized_models.get_entry``), or a timm model name."""
    if identifier.startswith("harmonized:"):
        from .checkpoint import load_final
        network, meta = load_final(identifier.split(":", 1)[1])
        return network, _preprocessing_from(meta)
    unknown: KeyError | None = None
    try:
        from harmonized_models import get_entry  # the model registry (may be absent in partial installs)
        entry = get_entry(identifier)
    except KeyError as error:  # the registry's UnknownModelError suggests close names
        entry, unknown = None, error
    except (ImportError, AttributeError):
        entry = None
    if entry is not None:
        network = entry.build(pretrained=pretrained) if hasattr(entry, "build") else entry.builder(pretrained)
        return network.eval(), _preprocessing_from(entry.preprocessing)
    import timm
    from timm.data import resolve_data_config

    from harmonized_models.baselines import _timm_builder  # one clear error for unavailable pretrained weights
    if identifier not in timm.list_models(pretrained=False):
        hint = f";{str(unknown).split(';', 1)[1]}" if unknown is not None and ";" in str(unknown) else ""
        raise KeyError(f"unknown model {identifier!r}: not 'harmonized:PATH', not a registered model and not a timm "
                       f"model name{hint}")
    network = _timm_builder(identifier, pretrained).eval()
    return network, _preprocessing_from(resolve_data_config({}, model=network))


def plot_examples(examples: list, out_png: str | os.PathLike, mean, std) -> Path:
    """Rows of (image, human map, model saliency) for a few ClickMe images (matplotlib, Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 3, figsize=(7, 2.3 * len(examples)), squeeze=False)
    m, s = np.asarray(mean)[:, None, None], np.asarray(std)[:, None, None]
    for row, (image, human, sal) in zip(axes, examples):
        row[0].imshow(np.clip((image * s + m).transpose(1, 2, 0), 0, 1))
        row[1].imshow(human, cmap="magma")
        row[2].imshow(sal, cmap="magma")
        for ax, title in zip(row, ("image", "human (ClickMe)", "saliency |grad| max")):
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out_png, format="png", dpi=100)


def evaluate(identifier: str, clickme: str | os.PathLike, *, imagenet_val: str | os.PathLike | None = None,
             batch_size: int = 32, device: str = "auto", workers: int = 0, pretrained: bool = True,
             map_preprocessing: str = "reference", out: str | os.PathLike | None = None,
             progress: bool = True) -> dict[str, Any]:
    """ClickMe alignment (+ ImageNet top-1 when ``imagenet_val`` is given) of a model; with ``out`` (a folder) also
    writes ``scores.json`` and ``examples.png`` there."""
    network, prep = load_network(identifier, pretrained)
    dataset = ClickMeDataset(open_clickme(clickme), prep.image_size, prep.mean, prep.std, map_preprocessing)
    result = clickme_alignment(network, dataset, batch_size=batch_size, device=device, workers=workers,
                               progress=progress, return_maps=4 if out else 0)
    result["model"] = identifier
    result["human_ceiling"] = HUMAN_SPEARMAN_CEILING
    if imagenet_val:
        result["top1"] = imagenet_top1(network, imagenet_val, image_size=prep.image_size, mean=prep.mean,
                                       std=prep.std, crop_pct=prep.crop_pct, interpolation=prep.interpolation,
                                       batch_size=batch_size, device=device, workers=workers, progress=progress)
    examples = result.pop("examples", None)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_file(out / "scores.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        if examples:
            plot_examples(examples, out / "examples.png", prep.mean, prep.std)
    return result
