"""What the Arcaro2020sim scores mean: the generator and its controls under -pls and -residual_pls, with the floor.

Usage: ``python benchmarks/twin_scores.py [--home HOME] [--sites M1PL M1ML M2ML]`` on an imported twin (default: the
data home's ``Arcaro2020sim``). Prints, per site, the raw r, r / sqrt(ceiling) and the Brain-Score ceiled value
(raw^2 / ceiling) of: the image-blind predictor (position_only), the generator at its layer, another seed, the
generator at layer1, a left-right flipped feature map and another image's features. The numbers in
docs/BENCHMARKS.md come from this script (seed-0 full-size twin).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.benchmarks import metric
from benchmarks_it_maps.data import simulate
from benchmarks_it_maps.home import data_home


def commit(sidecar: dict, identifier: str, layer: str, network=None):
    from harmonized_models import model_from_network
    gen = sidecar["generator"]
    preprocessing = dict(image_size=gen["image_size"], mean=gen["mean"], std=gen["std"],
                         interpolation=gen["interpolation"])
    network = network if network is not None else simulate.build_generator_network(sidecar)
    return model_from_network(network, identifier, preprocessing, layer, visual_degrees=8.0)


def variants(sidecar: dict, site: bm.ArcaroSiteBenchmark) -> dict:
    """Regressors [I, P, F] of every control, read through the benchmark's own model path."""
    layer = sidecar["generator"]["layer"]
    network = simulate.build_generator_network(sidecar)
    other = json.loads(json.dumps(sidecar))
    other["generator"]["weights_seed"] = 123
    grid = site.data.grid_size
    gen, _ = site.model_features(commit(sidecar, "gen", layer, network))
    out = {"generator": gen,
           "other_seed": site.model_features(commit(other, "seed123", layer))[0],
           "layer1": site.model_features(commit(sidecar, "gen-layer1", "layer1", network))[0]}
    n_img = gen.shape[0]
    out["flipped_map"] = gen.reshape(n_img, grid, grid, -1)[:, :, ::-1].reshape(gen.shape)
    out["other_image"] = np.roll(gen, 1, axis=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--sites", nargs="+", default=list(bm.SITES))
    args = parser.parse_args()
    if args.home:
        os.environ["BRAINSCORE_ITMAPS_HOME"] = str(Path(args.home).resolve())
    print(f"data home {data_home()}")
    sidecar = json.loads((data_home() / "Arcaro2020sim" / "generator.json").read_text())
    for site_key in args.sites:
        plain = bm.load(f"Arcaro2020sim.{site_key}-pls")
        residual = bm.load(f"Arcaro2020sim.{site_key}-residual_pls")
        n_img, grid, _, n_chan = plain.data.targets.shape
        targets = plain.data.targets.reshape(n_img, grid * grid, n_chan)
        rows = {"position_only": metric.training_mean_maps(targets)}
        for name, features in variants(sidecar, plain).items():
            rows[name] = metric.loio_pls(features, targets).predictions
        for bench in (plain, residual):
            ceiling = float(bench.ceiling)
            print(f"{bench.identifier}: ceiling {ceiling:.3f} ({bench.ceiling.attrs['method']})")
            for name, predictions in rows.items():
                raw = metric.maps_fit(predictions, targets, residual=bench.residual).score
                print(f"  {name:14s} raw {raw:6.3f}  r/sqrt(ceiling) {raw / np.sqrt(ceiling):6.3f}  "
                      f"ceiled {bm.ceiled_value(raw, ceiling)[0]:6.3f}")


if __name__ == "__main__":
    main()
