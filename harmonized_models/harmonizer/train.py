"""Harmonize a timm model: ImageNet classification + alignment of its gradient saliency with ClickMe human maps.

``brainscore harmonize train`` calls :func:`train`. Features: mixed ImageNet/ClickMe batches, AMP (bf16 by default
on CUDA; fp16 with a GradScaler), gradient clipping, linear warm-up + cosine schedule (per step), a checkpoint after
every epoch with exact resume (model, optimizer, scheduler, scaler, every rank's RNG states, position in the epoch),
a JSON-lines log of each loss term, tqdm bars, DistributedDataParallel under ``torchrun`` (initialised only when
WORLD_SIZE > 1), and a final checkpoint folder ``OUT/final`` (CONTRACTS.md F) that
``harmonized_models.load_model('harmonized:OUT/final')`` loads.

Multi-GPU: ``torchrun --nproc_per_node 8 -m benchmarks_it_maps harmonize train ...`` (``--batch-size`` is per
process; every process draws its own share of each global batch, so N processes x B samples see exactly the samples
of 1 process x N*B; logged loss terms are averaged over processes).

The optimiser gets no weight decay of its own: the L2 term is part of the harmonizer loss, as in the reference.
Hyper-parameters of the reference (optimiser, schedule, epochs, data mix) were not published [NF]; ours are
documented defaults.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks_it_maps.home import atomic_file, save_figure

from .checkpoint import save_final
from .clickme import ClickMeDataset, open_clickme
from .data import MixedBatchSampler, MixedDataset, collate, imagenet_folder, train_transform
from .loss import decay_parameters, harmonizer_loss

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "brainscore-itmaps/harmonizer-train/1"
AMP_MODES = ("auto", "off", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")
#: A checkpoint file name ``latest.json`` may point to: a plain name in ``checkpoints/`` (no folders, no ``..``).
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.pt")


@dataclass
class TrainConfig:
    """Everything that defines a harmonizer run. Fields after ``imagenet_val`` only affect how it runs."""
    model: str
    clickme: str
    out: str
    imagenet: str | None = None
    epochs: int = 1
    pretrained: bool = False
    num_classes: int | None = None      # default: the timm model's (1000)
    image_size: int | None = None       # default: the timm model's input size
    batch_size: int = 32                # per process
    clickme_fraction: float = 0.5       # share of each batch taken from ClickMe (token 1)
    steps_per_epoch: int | None = None  # default: one pass over the ClickMe part
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    warmup_steps: int = 0
    min_lr: float = 0.0
    lambda_weights: float = 1e-5
    lambda_harmonization: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float | None = 1.0
    amp: str = "auto"
    seed: int = 0
    augment: bool = True
    map_preprocessing: str = "reference"
    imagenet_val: str | None = None     # top-1 for model.json at the end
    workers: int = 4
    log_every: int = 10
    device: str = "auto"
    resume: bool = False
    stop_after_steps: int | None = None  # stop (with a checkpoint) after this many steps of this invocation
    progress: bool = True


#: Fields that may differ between an interrupted run and its resumption.
RUNTIME_FIELDS = ("clickme", "out", "imagenet", "imagenet_val", "workers", "log_every", "device", "resume",
                  "stop_after_steps", "progress")


class TrainError(ValueError):
    """A training setup that cannot run as given; the message says what to change."""


def _identity(config: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS}


# --- distributed / device ------------------------------------------------------------------------------------------

@dataclass
class _Dist:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup(config: TrainConfig) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and config.device in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        info = _Dist(world, dist.get_rank(), local_rank)
        device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    else:
        info = _Dist()
        name = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(name)
    return info, device


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.amp not in AMP_MODES:
        raise TrainError(f"--amp must be one of {AMP_MODES}, got {config.amp!r}")
    mode = config.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


# --- model, data, optimisation ---------------------------------------------------------------------------------------

def build_network(config: TrainConfig) -> tuple[nn.Module, dict, dict]:
    """The timm model, its data config (input size, mean, std, crop_pct, interpolation) and the extra
    ``timm.create_model`` kwargs needed to rebuild it (``img_size`` for transformers at a non-default size)."""
    from timm.data import resolve_data_config

    from harmonized_models.baselines import _timm_builder  # one clear error for unavailable pretrained weights

    kwargs: dict[str, Any] = {} if config.num_classes is None else {"num_classes": config.num_classes}
    try:
        network = _timm_builder(config.model, config.pretrained, **kwargs)
    except RuntimeError as error:  # unknown model names; WeightsUnavailableError (pretrained weights)
        raise TrainError(f"--model {config.model!r}: {error}") from error
    data_cfg = resolve_data_config({}, model=network)
    model_kwargs: dict[str, Any] = {}
    if config.image_size and config.image_size != data_cfg["input_size"][-1]:
        try:  # position embeddings follow the image size (timm resamples pretrained ones)
            network = _timm_builder(config.model, config.pretrained, img_size=config.image_size, **kwargs)
            model_kwargs["img_size"] = config.image_size
        except TypeError:
            pass  # convolutional networks take any size
        data_cfg = dict(data_cfg, input_size=(3, config.image_size, config.image_size))
    return network, data_cfg, model_kwargs


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(config: TrainConfig, network: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in network.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               weight_decay=0.0)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    raise TrainError(f"--optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")


# --- state --------------------------------------------------------------------------------------------------------

def _rng_state(device: torch.device) -> dict:
    """Every RNG state as tensors and plain numbers, so a checkpoint loads with ``torch.load(weights_only=True)``."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict, device: torch.device) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((int(py["version"]), tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _all_rng_states(dist_info: _Dist, device: torch.device) -> list[dict]:
    state = _rng_state(device)
    if dist_info.world_size == 1:
        return [state]
    import torch.distributed as dist
    gathered: list = [None] * dist_info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _mean_over_ranks(values: dict[str, float], dist_info: _Dist, device: torch.device) -> dict[str, float]:
    """Average logged values over all ranks (each rank computed them on its own share of the batch)."""
    if dist_info.world_size == 1:
        return values
    import torch.distributed as dist
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    return {k: float(v) / dist_info.world_size for k, v in zip(keys, packed.tolist())}


def _load_checkpoint(path: Path, device: torch.device) -> dict:
    """A training checkpoint, loaded with ``weights_only=True``: tensors and plain containers only, so a crafted
    file cannot run code (it is refused with one line instead)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = " ".join(str(error).split())[:200]
        raise TrainError(f"{path}: refused, it holds objects other than tensors and plain values ({reason}); "
                         "only checkpoints written by `brainscore harmonize train` can be resumed") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise TrainError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}); delete it or restore it") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a harmonizer training checkpoint (field 'format' is not "
                         f"{CHECKPOINT_FORMAT!r})")
    return state


class _Run:
    """Mutable training state and the files of one output folder."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.out = Path(config.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.log_file = self.out / "log.jsonl"
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0

    def latest(self) -> Path | None:
        """The checkpoint ``checkpoints/latest.json`` names; only a plain file name inside ``checkpoints/``."""
        pointer = self.ckpt_dir / "latest.json"
        if not pointer.is_file():
            return None
        try:
            name = json.loads(pointer.read_text())["file"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise TrainError(f"{pointer}: not a checkpoint pointer (expected JSON with a 'file' field); delete it "
                             "to start over or restore it") from None
        if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name):
            raise TrainError(f"{pointer}: field 'file' must name a .pt file inside {self.ckpt_dir} (got {name!r}); "
                             "checkpoints are never read from elsewhere")
        return self.ckpt_dir / name

    def save(self, name: str, state: dict) -> Path:
        path = self.ckpt_dir / name
        with atomic_file(path) as tmp:
            torch.save(state, tmp)
        with atomic_file(self.ckpt_dir / "latest.json") as tmp:
            tmp.write_text(json.dumps({"file": name, "epoch": state["epoch"], "step_in_epoch":
                                       state["step_in_epoch"], "global_step": state["global_step"]}))
        return path

    def append_log(self, record: dict) -> None:
        with open(self.log_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_log(self, global_step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be written again)."""
        if not self.log_file.is_file():
            return
        keep = [line for line in self.log_file.read_text().splitlines()
                if line.strip() and json.loads(line).get("global_step", 0) <= global_step]
        with atomic_file(self.log_file) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))


def plot_log(log_file: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Plot each loss term of a training log against the step (matplotlib, Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line.strip()]
    steps = [r for r in records if r.get("event") == "step"]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    for ax, key in zip(axes, ("ce", "harmonization", "weights", "lr")):
        ax.plot([r["global_step"] for r in steps], [r[key] for r in steps])
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    return save_figure(fig, out_png, format="png", dpi=100)


# --- the loop -----------------------------------------------------------------------------------------------------

def train(config: TrainConfig) -> Path | None:
    """Run (or resume) a harmonizer training; returns the final checkpoint folder, or None when the run stopped
    early (``stop_after_steps``) after saving a checkpoint to resume from."""
    dist_info, device = _setup(config)
    run = _Run(config)
    latest = run.latest()
    if latest is not None and not config.resume:
        raise TrainError(f"{run.out} already holds checkpoints ({latest.name}); pass --resume to continue that run "
                         f"or choose another --out")
    if config.resume and latest is None:
        raise TrainError(f"--resume: {run.ckpt_dir} has no checkpoint to resume from")
    amp_dtype = _amp_dtype(config, device)

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)  # same initial weights on every rank
    network, data_cfg, model_kwargs = build_network(config)
    num_classes = network.num_classes if hasattr(network, "num_classes") else config.num_classes
    image_size = int(data_cfg["input_size"][-1])
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    torch.manual_seed(config.seed + dist_info.rank)  # dropout / drop-path differ across ranks

    clickme = ClickMeDataset(open_clickme(config.clickme), image_size, mean, std, config.map_preprocessing)
    imagenet = None
    if config.clickme_fraction < 1:
        if not config.imagenet:
            raise TrainError("--imagenet is required unless --clickme-fraction is 1")
        imagenet = imagenet_folder(config.imagenet, train_transform(image_size, mean, std,
                                                                    data_cfg.get("interpolation", "bilinear"),
                                                                    config.augment))
        if len(imagenet.classes) > num_classes:
            raise TrainError(f"{config.imagenet}: {len(imagenet.classes)} class folders but the model has "
                             f"{num_classes} outputs; pass --num-classes {len(imagenet.classes)}")
    sampler = MixedBatchSampler(len(imagenet) if imagenet else 0, len(clickme), config.batch_size,
                                config.clickme_fraction, seed=config.seed, world_size=dist_info.world_size,
                                rank=dist_info.rank, steps_per_epoch=config.steps_per_epoch)
    dataset = MixedDataset(imagenet, clickme, image_size, config.augment)
    sizes = {"imagenet": len(imagenet) if imagenet else 0, "clickme": len(clickme)}

    network = network.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    decay = [p for _, p in decay_parameters(network)]
    optimizer = _optimizer(config, network)
    total = config.epochs * sampler.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, config.warmup_steps, config.min_lr / config.lr if config.lr else 0))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    if config.resume:
        state = _load_checkpoint(latest, device)
        if state["config"] != _identity(config) or state["sizes"] != sizes or state["world_size"] != \
                dist_info.world_size:
            diff = {k: (state["config"].get(k), v) for k, v in _identity(config).items()
                    if state["config"].get(k) != v}
            raise TrainError(f"{latest}: the run was started with other settings {diff or ''} "
                             f"(data sizes {state['sizes']} vs {sizes}, world size {state['world_size']} vs "
                             f"{dist_info.world_size}); resume with the same settings")
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][dist_info.rank], device)
        run.epoch, run.step_in_epoch, run.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        if dist_info.main:
            run.truncate_log(run.global_step)
            log.info("resuming %s at epoch %d, step %d", latest, run.epoch + 1, run.step_in_epoch)
    elif dist_info.main:
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    model = network
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint(name: str) -> None:
        rng = _all_rng_states(dist_info, device)
        if dist_info.main:
            run.save(name, {"format": CHECKPOINT_FORMAT, "config": _identity(config), "sizes": sizes,
                            "world_size": dist_info.world_size, "model": network.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(), "rng": rng, "epoch": run.epoch,
                            "step_in_epoch": run.step_in_epoch, "global_step": run.global_step})
        if dist_info.world_size > 1:
            torch.distributed.barrier()

    steps_this_call = 0
    consistent = True
    try:
        while run.epoch < config.epochs:
            sampler.set_epoch(run.epoch)
            sampler.set_start(run.step_in_epoch)
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=sampler, num_workers=config.workers, collate_fn=collate,
                pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(config.seed * 100003 + run.epoch))
            model.train()
            window: dict[str, float] = {}
            bar = tqdm(loader, total=sampler.steps, initial=run.step_in_epoch, desc=f"epoch {run.epoch + 1}/"
                       f"{config.epochs}", disable=not (config.progress and dist_info.main), dynamic_ncols=True)
            for batch in bar:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                images = batch["images"]
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    loss, parts = harmonizer_loss(model, images, batch["labels"], batch["maps"], batch["tokens"],
                                                  config.lambda_weights, config.lambda_harmonization,
                                                  config.label_smoothing, decay_params=decay)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {run.global_step}: {parts}")
                consistent = False
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = (nn.utils.clip_grad_norm_(network.parameters(), config.clip_grad)
                             if config.clip_grad else torch.zeros(()))
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                run.step_in_epoch += 1
                run.global_step += 1
                consistent = True
                steps_this_call += 1
                for key, value in (("loss", loss.detach()), ("grad_norm", grad_norm), *parts.items()):
                    window[key] = window.get(key, 0.0) + float(value)
                window["n"] = window.get("n", 0) + 1
                if run.global_step % config.log_every == 0 or run.step_in_epoch == sampler.steps:
                    n = window.pop("n")
                    means = _mean_over_ranks({k: v / n for k, v in window.items()}, dist_info, device)
                    if dist_info.main:
                        record = {"event": "step", "epoch": run.epoch + 1, "step": run.step_in_epoch,
                                  "global_step": run.global_step, "lr": lr, **means, "time": time.time()}
                        run.append_log(record)
                        bar.set_postfix(ce=f"{record['ce']:.3f}", harm=f"{record['harmonization']:.4f}")
                    window = {}
                if config.stop_after_steps and steps_this_call >= config.stop_after_steps \
                        and run.step_in_epoch < sampler.steps:
                    checkpoint("interrupted.pt")
                    log.info("stopped after %d steps; resume with --resume", steps_this_call)
                    return None
            bar.close()
            run.epoch += 1
            run.step_in_epoch = 0
            checkpoint(f"epoch_{run.epoch:03d}.pt")
            if config.stop_after_steps and steps_this_call >= config.stop_after_steps and run.epoch < config.epochs:
                log.info("stopped after %d steps; resume with --resume", steps_this_call)
                return None
    except KeyboardInterrupt:
        if consistent and dist_info.world_size == 1:
            checkpoint("interrupted.pt")
            log.warning("interrupted: saved a checkpoint at epoch %d, step %d; resume with --resume",
                        run.epoch + 1, run.step_in_epoch)
        raise

    final = run.out / "final"
    if dist_info.main:
        top1 = None
        if config.imagenet_val:
            from .evaluate import imagenet_top1
            top1 = imagenet_top1(network, config.imagenet_val, image_size=image_size, mean=mean, std=std,
                                 crop_pct=data_cfg.get("crop_pct", 0.875),
                                 interpolation=data_cfg.get("interpolation", "bilinear"),
                                 batch_size=config.batch_size, device=device, workers=config.workers,
                                 progress=config.progress)
        save_final(network, final, architecture=config.model, num_classes=num_classes, image_size=image_size,
                   mean=mean, std=std, top1=top1, it_layer=None, model_kwargs=model_kwargs,
                   crop_pct=data_cfg.get("crop_pct"), interpolation=data_cfg.get("interpolation"),
                   top1_source=f"imagenet_val:{config.imagenet_val}" if top1 is not None else None,
                   harmonizer={k: v for k, v in _identity(config).items()}, global_step=run.global_step)
        if run.log_file.is_file():
            plot_log(run.log_file, run.out / "loss.png")
        log.info("final checkpoint: %s (load with harmonized_models.load_model('harmonized:%s'))", final, final)
    if dist_info.world_size > 1:
        torch.distributed.barrier()
    return final
