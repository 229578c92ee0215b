"""GPU throughput check: score two random-weight networks on the full-size simulated twin, both protocols.

Run by ``benchmarks/gpu_check.sh`` on a GPU machine (works on a CPU too, slowly). For each network
(``harmonized_resnet50``'s architecture and a ViT-B/16, random weights) it

1. scores ``Arcaro2020sim.IT-pls`` (maps protocol, all three sites: 2 x 14 whole images),
2. scores ``Arcaro2020sim.M2ML-shift_pls`` (shift protocol: 14 images x 81 grid positions = 1134 presentations),
3. extracts the committed IT layer for Monkey 1's shift presentations (14 x 289 = 4046; throughput only; scoring
   all sites of the shift protocol is ``--full-shift``),
4. runs a bare forward loop of the same network on random tensors already on the GPU (same batch size, autocast,
   channels-last) for the same number of images,

and prints images/second of :class:`harmonized_models.activations.TorchActivationsModel` (decode + transfer +
forward + copy back), the ratio to the bare loop, wall time per benchmark and peak GPU memory. A JSON summary goes to
``--out``. Steps past ``--budget`` seconds are skipped (and reported), so the whole check stays inside its slot.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BS_INSTALL_DEPENDENCIES", "no")
os.environ.setdefault("RESULTCACHING_DISABLE", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("BRAINSCORE_SKIP_MEMORY_CHECK", "1")
os.environ.setdefault("BRAINSCORE_ITMAPS_HOME", tempfile.mkdtemp(prefix="bsitmaps-gpu-"))

START = time.perf_counter()
log = logging.getLogger("gpu_throughput")


def elapsed() -> float:
    return time.perf_counter() - START


def versions() -> dict:
    import numpy, pandas, sklearn, timm, torch, xarray
    info = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__, "xarray": xarray.__version__,
            "sklearn": sklearn.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def simulate_twin(small: bool = False) -> dict:
    """Simulate and import the twin: full size (14 images, 17 x 17 and 9 x 9 grids), or tiny for a dry run."""
    from benchmarks_it_maps.data import assemblies as data
    from benchmarks_it_maps.data import simulate
    folder = Path(tempfile.mkdtemp(prefix="twin-"))
    size = dict(images=3, grids=(5, 5)) if small else dict(images=14, grids=(17, 9))
    archive = simulate.simulate_archive(folder / "Arcaro2020sim.zip", seed=0, repetitions=4, **size)
    return data.import_arcaro2020(archive)


def networks() -> dict:
    """name -> (network, preprocessing, region_layer_map), random weights (seeded)."""
    import timm
    import torch
    from harmonized_models import get_entry
    from harmonized_models.layer_rules import commit_layers
    from harmonized_models.preprocessing import Preprocessing
    torch.manual_seed(0)
    resnet = get_entry("harmonized_resnet50")
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    return {
        "harmonized_resnet50-arch": (resnet.build(pretrained=False), resnet.preprocessing,
                                     dict(resnet.region_layer_map)),
        "vit_base_patch16_224-random": (vit, Preprocessing(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3),
                                        commit_layers(vit, 224).region_layer_map),
    }


def bare_forward(network, n_images: int, batch_size: int, image_size: int, autocast_dtype, device) -> float:
    """Images/second of a plain inference loop on random tensors already on the device."""
    import torch
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(
        memory_format=torch.channels_last)
    ctx = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else torch.autocast(device_type=device.type, enabled=False))
    with torch.inference_mode(), ctx:
        for _ in range(3):  # warm-up (cuDNN autotuning)
            network(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        done = 0
        while done < n_images:
            network(x[: min(batch_size, n_images - done)])
            done += min(batch_size, n_images - done)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n_images / (time.perf_counter() - start)


def measure(model, benchmark_identifier: str, device) -> dict:
    """Score ``model`` on a benchmark; wall time, extraction throughput and peak GPU memory."""
    import torch
    from benchmarks_it_maps import load_benchmark
    activations = model.activations_model
    first = len(activations.run_log)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    score = load_benchmark(benchmark_identifier)(model)
    wall = time.perf_counter() - start
    runs = activations.run_log[first:]
    images = sum(r["images"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    return {"benchmark": benchmark_identifier, "score": float(score), "raw": float(score.attrs["raw"]),
            "layer": str(score.attrs.get("layer")), "wall_s": wall, "images": images, "extract_s": seconds,
            "images_per_s": images / seconds if seconds else None,
            "batch_size": runs[-1]["batch_size"] if runs else None,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None}


def shift_extraction(model, site: str, device) -> dict:
    """Throughput of extracting the IT layer for all shift presentations of one site (no scoring)."""
    import torch
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    target = bm.load(f"Arcaro2020sim.{site}-shift_pls")
    data = target.data
    plan = bm.shift_plan(data.stimulus_set, data.grid_size, float(model.visual_degrees()), target._visual_degrees,
                         canvas_px=target.shift_canvas_px)
    activations = model.activations_model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    layer = model.layer_model.region_layer_map["IT"]
    paths = [str(plan.stimulus_set.get_stimulus(sid)) for sid in plan.stimulus_set["stimulus_id"]]
    start = time.perf_counter()  # the tensor path: presentations composed on the device (no files)
    with activations.placed_presentations(paths, plan.source_images(), plan.sources, plan.tops, plan.lefts,
                                          plan.canvas_px, bm.SHIFT_BACKGROUND):
        activations(plan.stimulus_set, layers=[layer])
    wall = time.perf_counter() - start
    run = activations.run_log[-1]
    return {"benchmark": f"{site} shift presentations (extraction only)", "images": run["images"],
            "extract_s": run["seconds"], "wall_s": wall, "images_per_s": run["images"] / run["seconds"],
            "batch_size": run["batch_size"],
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--budget", type=float, default=240.0, help="seconds after which remaining steps are skipped")
    parser.add_argument("--full-shift", action="store_true", help="score Arcaro2020sim.IT-shift_pls (all sites)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--small", action="store_true", help="tiny twin and a 1 s bare loop: a CPU dry run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    import torch
    from harmonized_models.activations import resolve_device
    from harmonized_models.commitment import model_from_network
    torch.backends.cudnn.benchmark = True
    device = resolve_device(args.device)
    summary = {"versions": versions(), "rows": [], "skipped": []}
    log.info("versions: %s", summary["versions"])
    t = time.perf_counter()
    summary["twin"] = {k: v for k, v in simulate_twin(args.small).items() if isinstance(v, (str, int, float, list))}
    summary["simulate_s"] = time.perf_counter() - t
    log.info("twin simulated and imported in %.1f s", summary["simulate_s"])
    benchmarks = ["Arcaro2020sim.IT-pls", "Arcaro2020sim.IT-shift_pls" if args.full_shift
                  else "Arcaro2020sim.M2ML-shift_pls"]
    for name, (network, preprocessing, region_layer_map) in networks().items():
        model = model_from_network(network, name, preprocessing, region_layer_map["IT"],
                                   region_layer_map=region_layer_map, device=device, batch_size=args.batch_size)
        activations = model.activations_model
        steps = [*(("score", b) for b in benchmarks), ("extract", "M1PL")]
        for kind, target in steps:
            if elapsed() > args.budget:
                summary["skipped"].append(f"{name}: {target}")
                log.warning("budget spent: skipping %s on %s", name, target)
                continue
            row = measure(model, target, device) if kind == "score" else shift_extraction(model, target, device)
            if row["images"] and row["batch_size"]:
                row["bare_images_per_s"] = bare_forward(activations._model, row["images"], row["batch_size"],
                                                        preprocessing.image_size, activations.autocast_dtype, device)
                row["ratio_to_bare"] = (row["images_per_s"] / row["bare_images_per_s"]
                                        if row["images_per_s"] else None)
            row["model"] = name
            summary["rows"].append(row)
            log.info("%s", json.dumps(row))
            write_summary(args.out, summary)  # after every row: a timeout still leaves the figures so far
        del model, activations, network
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_summary(args.out, summary)
    print_table(summary)
    return 0


def write_summary(out: Path, summary: dict) -> None:
    summary["total_s"] = elapsed()
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_throughput.json").write_text(json.dumps(summary, indent=2, default=str))


def print_table(summary: dict) -> None:
    header = (f"{'model':30s} {'benchmark':42s} {'score':>7s} {'images':>7s} {'img/s':>9s} {'bare img/s':>10s} "
              f"{'ratio':>6s} {'wall s':>7s} {'batch':>5s} {'peak MiB':>9s}")
    print("\n" + header + "\n" + "-" * len(header))

    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "-"
    for r in summary["rows"]:
        print(f"{r['model']:30s} {r['benchmark']:42s} {fmt(r.get('score'), '7.3f'):>7s} {r['images']:7d} "
              f"{fmt(r.get('images_per_s'), '9.1f'):>9s} {fmt(r.get('bare_images_per_s'), '10.1f'):>10s} "
              f"{fmt(r.get('ratio_to_bare'), '6.2f'):>6s} {fmt(r.get('wall_s'), '7.1f'):>7s} "
              f"{fmt(r.get('batch_size'), '5d'):>5s} {fmt(r.get('peak_gpu_mib'), '9.0f'):>9s}")
    print(f"\nversions: {summary['versions']}")
    print(f"twin simulation {summary['simulate_s']:.1f} s; total {summary['total_s']:.1f} s; skipped: "
          f"{summary['skipped'] or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
