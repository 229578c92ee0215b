"""The neural harmonizer loss (Fel et al. 2022), in PyTorch, matching the TensorFlow reference numerically.

Reference: ``serre-lab/Harmonization`` ``harmonization/training/loss.py`` and ``pyramid.py`` (PAPER_NOTES section 4).

loss = CE(label smoothing 0.1) + lambda_w * 0.5 * sum ||w||^2 (no norm layers, embeddings, class/register tokens)
       + lambda_h * pyramidal_mse(standardize_cut(saliency), rescaled standardize_cut(human map), tokens)

The *training* saliency is the reference's: the signed gradient of the true-class logit with respect to the input,
averaged over colour channels. (The *evaluation* saliency is max |gradient| over channels, see ``evaluate.py``;
PAPER_NOTES 6.13 -- we keep both as in the reference and document the difference.)
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

#: The 5-tap binomial filter of the reference pyramid; the 2-D kernel is its outer product divided by 256.
BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)
#: Number of pyramid levels the reference averages its MSE over (224, 112, 56, 28, 14 px).
PYRAMID_LEVELS = 5
#: Added to both maxima before the human map is rescaled to the saliency map's maximum (as the reference).
RESCALE_EPS = 1e-6
#: Epsilon of the reference's standardisation: (x - mean) / (std + eps).
STANDARDIZE_EPS = 1e-5

_NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)
#: Parameter-name patterns excluded from weight decay (the reference excludes names containing bn/, norm, Norm,
#: normalization, embed, class_token); we add timm's names for class/register/distillation tokens.
_NO_DECAY_NAME = re.compile(
    r"(norm|(^|\.)bn\d*(\.|$)|embed|cls_token|class_token|reg_token|register_token|dist_token)", re.IGNORECASE)


def standardize_cut(maps: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """Z-score each map ``[..., H, W]`` over H and W (population std, ``/(std + eps)``), then ReLU."""
    mean = maps.mean(dim=(-2, -1), keepdim=True)
    std = maps.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return torch.relu((maps - mean) / (std + eps))


def same_padding(size: int, kernel: int = 5, stride: int = 2) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis: total = max((ceil(n/s)-1)*s + k - n, 0),
    floor(total/2) before and the rest after (even n, k=5, s=2: 1 before, 2 after; odd n: 2 and 2)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def binomial_kernel(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The 5x5 binomial kernel ``[1, 1, 5, 5]`` (outer product of 1,4,6,4,1, normalised to sum 1)."""
    taps = torch.tensor(BINOMIAL_5, dtype=torch.float64)
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)[None, None]


def pyramid(maps: torch.Tensor, levels: int = PYRAMID_LEVELS) -> list[torch.Tensor]:
    """Gaussian pyramid of maps ``[B, H, W]``: the input followed by ``levels`` binomial 5x5, stride-2
    downsamplings with TensorFlow 'SAME' zero padding. Returns ``levels + 1`` tensors ``[B, h, w]``."""
    if maps.dim() != 3:
        raise ValueError(f"pyramid expects maps of shape [B, H, W], got {tuple(maps.shape)}")
    kernel = binomial_kernel(maps.dtype, maps.device)
    x = maps[:, None]
    out = [maps]
    for _ in range(levels):
        top, bottom = same_padding(x.shape[-2])
        left, right = same_padding(x.shape[-1])
        x = F.conv2d(F.pad(x, (left, right, top, bottom)), kernel, stride=2)
        out.append(x[:, 0])
    return out


def pyramidal_mse(maps_a: torch.Tensor, maps_b: torch.Tensor, tokens: torch.Tensor,
                  levels: int = PYRAMID_LEVELS) -> torch.Tensor:
    """Mean over the first ``levels`` pyramid levels of mean((a - b)^2 * token) over all elements of the level.

    As the reference, the mean at each level runs over every sample, so a batch with half its tokens at 0 gives
    half the loss of the same maps with all tokens at 1 (tokens only remove samples, they do not renormalise).
    """
    if maps_a.shape != maps_b.shape:
        raise ValueError(f"maps_a {tuple(maps_a.shape)} and maps_b {tuple(maps_b.shape)} differ in shape")
    pyr_a, pyr_b = pyramid(maps_a, levels), pyramid(maps_b, levels)
    weights = tokens.to(maps_a.dtype)[:, None, None]
    terms = [((pyr_a[i] - pyr_b[i]).square() * weights).mean() for i in range(levels)]
    return torch.stack(terms).mean()


@contextlib.contextmanager
def _double_backward_attention() -> Iterator[None]:
    """Restrict scaled-dot-product attention to the math kernel: the fused kernels have no double backward."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _forward_and_input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                                 create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass; returns (logits, d(sum of true-class logits)/d images) for a leaf copy of ``images``."""
    inputs = images.detach().requires_grad_(True)
    with _double_backward_attention():
        logits = model(inputs)
        if logits.dim() != 2:
            raise ValueError(f"the model must return logits [B, classes], got {tuple(logits.shape)}")
        score = logits.gather(1, labels.long()[:, None]).sum()
        (grad,) = torch.autograd.grad(score, inputs, create_graph=create_graph, retain_graph=True)
    return logits, grad


def saliency(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             create_graph: bool = True) -> torch.Tensor:
    """Training saliency ``[B, H, W]``: gradient of the true-class logit w.r.t. the input, averaged over colour
    channels (signed). Built with ``create_graph=True`` so a loss on it can be differentiated w.r.t. the weights."""
    _, grad = _forward_and_input_gradient(model, images, labels, create_graph=create_graph)
    return grad.mean(dim=1)


def is_decayed(name: str, module: nn.Module | None = None) -> bool:
    """Whether the parameter ``name`` (owned by ``module``) gets weight decay: not for normalisation layers (by
    module type or name), position/patch embeddings (``embed``) and class/register/distillation tokens."""
    if module is not None and (isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()):
        return False
    return _NO_DECAY_NAME.search(name) is None


def decay_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters ``(name, parameter)`` that the L2 term of the loss applies to."""
    owners = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            owners[f"{module_name}.{param_name}" if module_name else param_name] = module
    return [(name, p) for name, p in model.named_parameters()
            if p.requires_grad and is_decayed(name, owners.get(name))]


def weight_penalty(params: Iterable[torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """0.5 * sum of squared entries (TensorFlow's ``l2_loss`` summed over variables)."""
    terms = [p.to(dtype).square().sum() for p in params]
    if not terms:
        return torch.zeros((), dtype=dtype)
    return 0.5 * torch.stack(terms).sum()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def harmonizer_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, human_maps: torch.Tensor,
                    tokens: torch.Tensor, lambda_weights: float = 1e-5, lambda_harmonization: float = 1.0,
                    label_smoothing: float = 0.1, *, levels: int = PYRAMID_LEVELS,
                    dtype: torch.dtype = torch.float32,
                    decay_params: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The harmonizer loss for one batch; returns ``(loss, parts)`` with detached ``parts`` ce, harmonization,
    weights (the unweighted terms).

    ``images`` ``[B, 3, H, W]`` (already normalised), ``labels`` ``[B]`` class indices, ``human_maps`` ``[B, H, W]``,
    ``tokens`` ``[B]`` (1 = the sample has a human map). The model's forward runs under whatever autocast the caller
    set; every loss term is computed in ``dtype`` (float32; float64 for gradient checks) with autocast disabled.
    With ``lambda_harmonization == 0`` the harmonization term is still computed for logging, without double
    backward; with all tokens 0 it is exactly 0 and skipped.
    """
    if human_maps.dim() == 4 and human_maps.shape[1] == 1:  # tolerate [B, 1, H, W] (PAPER_NOTES 6.11)
        human_maps = human_maps[:, 0]
    if human_maps.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"human_maps must be [B, H, W] = {(images.shape[0], *images.shape[-2:])}, "
                         f"got {tuple(human_maps.shape)}")
    tokens = tokens.to(device=images.device)
    use_maps = bool((tokens != 0).any())
    differentiate = use_maps and lambda_harmonization != 0
    if use_maps:
        logits, grad = _forward_and_input_gradient(model, images, labels, create_graph=differentiate)
    else:
        logits = model(images)
    with torch.autocast(device_type=images.device.type, enabled=False):
        ce = F.cross_entropy(logits.to(dtype), labels.long(), label_smoothing=label_smoothing)
        if use_maps:
            sal = standardize_cut(grad.to(dtype).mean(dim=1))
            if not differentiate:
                sal = sal.detach()
            hum = standardize_cut(human_maps.to(dtype))
            hum_max = hum.amax(dim=(-2, -1), keepdim=True) + RESCALE_EPS
            sal_max = sal.detach().amax(dim=(-2, -1), keepdim=True) + RESCALE_EPS
            harmonization = pyramidal_mse(sal, hum / hum_max * sal_max, tokens.to(dtype), levels)
        else:
            harmonization = torch.zeros((), dtype=dtype, device=images.device)
        if decay_params is None:
            decay_params = [p for _, p in decay_parameters(_unwrap(model))]
        weights = weight_penalty(decay_params, dtype).to(images.device)
        loss = ce + lambda_weights * weights
        if differentiate:
            loss = loss + lambda_harmonization * harmonization
    parts = {"ce": ce.detach(), "harmonization": harmonization.detach(), "weights": weights.detach()}
    return loss, parts
