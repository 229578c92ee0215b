"""How fast are our benchmarks with our activations pipeline, compared with Brain-Score's stock one?

One run on the full-size simulated twin (14 images per monkey, 17x17 and 9x9 grids), a ResNet-18 (random weights,
committed IT layer ``layer3``, as the twin's generator), on this machine's CPU:

- ours: ``harmonized_models.model_from_network`` = ``TorchActivationsModel`` inside a ``ModelCommitment``, and the
  metric's exact PLS solver (:class:`benchmarks_it_maps.benchmarks.pls.ExactPLSRegression`);
- stock: brainscore-vision's ``PytorchWrapper`` (+ ``load_preprocess_images``) inside a ``ModelCommitment``, and
  scikit-learn's ``PLSRegression(25, scale=False)`` (NIPALS), the regression of Brain-Score's ``pls`` metric;
- the bare forward pass over the same images (decoded and preprocessed beforehand), for reference.

Both pipelines run the same benchmark protocol (whole-image ``look_at``, grid readout, leave-one-image-out PLS with
25 components); the data and the ceiling are loaded/computed once before timing, since they do not depend on the
model. Activation caching is disabled (``RESULTCACHING_DISABLE=1``) so that every run does the work. The two scores
differ only by NIPALS' convergence tolerance.

Also timed in the same run: ``Arcaro2020sim.IT-residual_pls`` (same fits, other statistic); the shift protocol's
extraction of monkey 1's 14 x 289 presentations (M1ML) through the tensor path (``look_at_shifted``: composed on
the model's device, no files) and through PNG files, against a bare forward loop (up to the IT layer) over the same
presentations composed and normalised beforehand, in the same batch size; and an upstream-format
``NeuralBenchmark`` built from the twin (``runs.upstream.twin_neural_benchmark``, 10 cross-validation splits of
``load_metric('pls')``) with the stock NIPALS regression against the exact solver swapped in by
``runs.upstream.accelerate``.

Usage: ``python benchmarks/score_speed.py [--repeats 1] [--threads N] [--parts score,shift,upstream] [--json]``.
Prints the figures and the ratios and the machine's load average before and after; ``--json`` prints one object
with ``ours_vs_bare``, ``ours_vs_stock``, ``residual_vs_bare``, ``shift_vs_bare`` (tensor-path extraction
throughput / bare throughput; ``shift_files_vs_bare`` for the PNG path) and ``upstream_speedup`` (stock / exact
seconds), for the parts run. The ``score`` part runs ours, ``-residual_pls`` and the bare pass in interleaved
rounds after one untimed warm-up run; ``ours_vs_bare`` is the minimum over the minimum, ``ours_vs_bare_paired``
(and ``residual_vs_bare_paired``) the median of each round's own ratio, the figure to trust on a shared machine.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time

import numpy as np

os.environ.setdefault("RESULTCACHING_DISABLE", "1")
os.environ.setdefault("BS_INSTALL_DEPENDENCIES", "no")
os.environ.setdefault("BRAINSCORE_SKIP_MEMORY_CHECK", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

BENCHMARK = "Arcaro2020sim.IT-pls"
RESIDUAL_BENCHMARK = "Arcaro2020sim.IT-residual_pls"
#: The shift protocol's largest extraction: monkey 1's 14 images x 17 x 17 positions = 4046 presentations.
SHIFT_SITE = "Arcaro2020sim.M1ML"
#: The upstream-format NeuralBenchmark's site (14 images x 9 x 9 presentations).
UPSTREAM_SITE = "Arcaro2020sim.M2ML"
LAYER = "layer3"
#: The upstream-format benchmark regresses on a whole flattened layer, as Brain-Score does (layer4: 512 x 7 x 7).
UPSTREAM_LAYER = "layer4"


def _network(seed: int = 0):
    import timm
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model("resnet18", pretrained=False).eval()


def _ours(network):
    from harmonized_models import model_from_network
    return model_from_network(network, "speed-resnet18-ours", dict(image_size=224), LAYER)


def _stock(network):
    from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper, load_preprocess_images
    from brainscore_vision.model_helpers.brain_transformation import ModelCommitment
    preprocessing = functools.partial(load_preprocess_images, image_size=224)
    wrapper = PytorchWrapper(model=network, preprocessing=preprocessing, identifier="speed-resnet18-stock")
    return ModelCommitment("speed-resnet18-stock", activations_model=wrapper, layers=[LAYER],
                           region_layer_map={region: LAYER for region in ("V1", "V2", "V4", "IT")})


def _timed_score(benchmark_factory, candidate) -> tuple[float, float]:
    benchmark = benchmark_factory()
    start = time.perf_counter()
    score = benchmark(candidate)
    return time.perf_counter() - start, float(score)


def _feature_seconds(candidate, benchmark) -> float:
    """Only the model part of the work: the benchmark's own feature step for each monkey's images (the committed
    layer's outputs read directly for our models, ``look_at`` for the stock one), the grid readout included."""
    cache: dict = {}
    start = time.perf_counter()
    for child in benchmark.children:
        child.model_features(candidate, cache)
    return time.perf_counter() - start


def _forward_seconds(network, benchmark) -> tuple[float, int]:
    """Bare forward pass up to the IT layer's output, over every image the benchmark shows, preprocessed already."""
    import torch
    from harmonized_models.preprocessing import Preprocessing
    preprocessing = Preprocessing(image_size=224)
    paths = []
    for child in benchmark.children:
        stimuli = child.data.stimulus_set
        paths.extend(str(stimuli.get_stimulus(sid)) for sid in child.data.stimulus_ids)
    unique = list(dict.fromkeys(paths))
    batch = torch.stack([preprocessing.load(p) for p in unique])
    handle = getattr(network, LAYER).register_forward_hook(_stop_at_layer)
    start = time.perf_counter()
    with torch.inference_mode():
        try:
            network(batch)
        except _Stop:
            pass
    seconds = time.perf_counter() - start
    handle.remove()
    return seconds, len(unique)


class _Stop(Exception):
    """Ends a bare forward pass once the IT layer has run (what the extractor's early exit does)."""


def _stop_at_layer(module, inputs, output):
    """Forward hook: the layer's output is computed (and copied, as an extractor would), then the pass stops."""
    output.detach().clone()
    raise _Stop


def _shift_throughput(network, batch_size: int = 64) -> dict:
    """Presentations/s of the shift protocol's extraction for monkey 1's presentations (``SHIFT_SITE``: 14 images x
    17 x 17 positions): the tensor path (``look_at_shifted``: composed on the device, no files), the PNG file path
    (``look_at`` of the rendered files, rendering not timed), and a bare forward loop over the same presentations
    (composed and normalised beforehand, same batch size, same layer, stopped once the layer has run, as the
    extractor does; timed before and after the tensor path, the mean is reported)."""
    import torch
    from harmonized_models import model_from_network
    from benchmarks_it_maps.benchmarks.arcaro2020 import look_at_shifted, render_shift_files, shift_plan
    benchmark = load_benchmark(f"{SHIFT_SITE}-shift_pls")
    data = benchmark.data
    candidate = model_from_network(network, "speed-resnet18-shift", dict(image_size=224), LAYER, batch_size=batch_size)
    plan = shift_plan(data.stimulus_set, data.grid_size, candidate.visual_degrees(), benchmark._visual_degrees,
                      canvas_px=benchmark.shift_canvas_px)
    n = len(plan.stimulus_set)
    activations = candidate.activations_model
    paths = [str(plan.stimulus_set.get_stimulus(sid)) for sid in plan.stimulus_set["stimulus_id"]]
    with activations.placed_presentations(paths, plan.source_images(), plan.sources, plan.tops, plan.lefts,
                                          plan.canvas_px) as placement:
        batches = [activations.preprocessing.normalize(placement.batch(np.arange(i, min(i + batch_size, n)),
                                                                       activations.preprocessing))
                   .contiguous(memory_format=torch.channels_last) for i in range(0, n, batch_size)]
    layer = network.get_submodule(LAYER)

    def bare() -> float:
        handle = layer.register_forward_hook(_stop_at_layer)
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                try:
                    network(batch)
                except _Stop:
                    pass
        handle.remove()
        return time.perf_counter() - start

    # bare, tensor path, bare again: the machine is shared, so the reference brackets the measurement
    loads = [os.getloadavg()[0]]
    bare_s = [bare()]
    loads.append(os.getloadavg()[0])
    start = time.perf_counter()
    tensor = look_at_shifted(candidate, data.window, plan)
    tensor_s = time.perf_counter() - start
    loads.append(os.getloadavg()[0])
    bare_s.append(bare())
    loads.append(os.getloadavg()[0])
    del batches
    start = time.perf_counter()
    render_shift_files(plan)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    files = look_at_shifted(candidate, data.window, plan, use_tensors=False)
    files_s = time.perf_counter() - start
    loads.append(os.getloadavg()[0])
    same = bool((tensor.values == files.values).all())
    bare_s = float(np.mean(bare_s))
    return dict(n=n, tensor=n / tensor_s, files=n / files_s, bare=n / bare_s, render_s=render_s, same=same,
                seconds=dict(tensor=tensor_s, files=files_s, bare=bare_s), loads=loads)


def _upstream_seconds(network) -> dict:
    """Stock (NIPALS) vs exact PLS on the twin's upstream-format NeuralBenchmark, same model, same splits."""
    from harmonized_models import model_from_network
    from benchmarks_it_maps.runs import upstream
    out = {}
    candidate = model_from_network(network, "speed-resnet18-upstream", dict(image_size=224), UPSTREAM_LAYER)
    for name in ("stock", "exact"):
        benchmark = upstream.twin_neural_benchmark(UPSTREAM_SITE)
        benchmark.ceiling  # computed once per benchmark object, before timing
        if name == "exact":
            upstream.accelerate(benchmark)
        start = time.perf_counter()
        score = benchmark(candidate)
        out[name] = (time.perf_counter() - start, float(score))
    return out


def load_benchmark(identifier: str):
    from benchmarks_it_maps import load_benchmark as load
    return load(identifier)


PARTS = ("score", "shift", "upstream")


def _score_part(args, torch) -> dict:
    """ours vs stock vs bare forward on ``IT-pls`` and ``-residual_pls``."""
    start = time.perf_counter()
    prepared = load_benchmark(BENCHMARK)
    for child in prepared.children:
        child.ceiling  # loads the data and computes the ceiling once
    setup = time.perf_counter() - start

    def factory(solver: str, identifier: str = BENCHMARK):
        benchmark = load_benchmark(identifier)
        for fresh, loaded in zip(benchmark.children, prepared.children):
            fresh._data, fresh._ceiling_score = loaded.data, loaded.ceiling
            fresh.pls_solver = solver
        return benchmark

    network = _network()
    _timed_score(functools.partial(factory, "exact"), _ours(network))  # warm-up (first-call allocations), untimed
    ours, residual, forward = [], [], []
    for _ in range(args.repeats):  # interleaved rounds: the three runs of a round see the same machine load
        ours.append(_timed_score(functools.partial(factory, "exact"), _ours(network)))
        residual.append(_timed_score(functools.partial(factory, "exact", RESIDUAL_BENCHMARK), _ours(network)))
        forward.append(_forward_seconds(network, prepared))
    stock = [_timed_score(functools.partial(factory, "sklearn"), _stock(network)) for _ in range(args.repeats)]
    look_ours = min(_feature_seconds(_ours(network), prepared) for _ in range(args.repeats))
    look_stock = min(_feature_seconds(_stock(network), prepared) for _ in range(args.repeats))
    ours_s, ours_score = min(ours)
    stock_s, stock_score = min(stock)
    forward_s, n_images = min(forward)
    print(f"benchmark            {BENCHMARK} (full-size simulated twin, {n_images} images), resnet18 {LAYER}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"data + ceiling       {setup:8.2f} s (once, shared)")
    print(f"ours  (TorchActivationsModel, exact PLS)   {ours_s:8.2f} s   score {ours_score:.4f}")
    print(f"stock (PytorchWrapper, sklearn NIPALS PLS) {stock_s:8.2f} s   score {stock_score:.4f}")
    print(f"bare forward pass              {forward_s:8.2f} s   ({n_images} images, one batch)")
    print(f"speed-up ours vs stock         {stock_s / ours_s:8.2f} x   (target >= 3 x)")
    print(f"features only: ours {look_ours:.2f} s, stock {look_stock:.2f} s, speed-up {look_stock / look_ours:.2f} x; "
          f"the rest of each run ({ours_s - look_ours:.2f} s ours, {stock_s - look_stock:.1f} s stock) is the "
          f"leave-one-image-out PLS (the model's fit and the floor's), the alignment and the bootstrap")
    paired = {name: _paired_ratio(runs, forward) for name, runs in (("ours", ours), ("residual", residual))}
    print(f"ours vs bare forward pass      {ours_s / forward_s:8.2f} x slower (metric + packaging; minimum over "
          f"minimum), {paired['ours']:.2f} x as the median of the {len(ours)} rounds' own ratios")
    residual_s, residual_score = min(residual)
    print(f"ours on {RESIDUAL_BENCHMARK}   {residual_s:8.2f} s   score {residual_score:.4f}   "
          f"({residual_s / forward_s:.2f} x the bare forward pass; {paired['residual']:.2f} x paired median)")
    if abs(ours_score - stock_score) > 1e-3:
        print(f"WARNING: the two pipelines disagree on the score ({ours_score:.6f} vs {stock_score:.6f})")
    return dict(ratios={"ours_vs_bare": ours_s / forward_s, "ours_vs_stock": stock_s / ours_s,
                        "residual_vs_bare": residual_s / forward_s, "ours_vs_bare_paired": paired["ours"],
                        "residual_vs_bare_paired": paired["residual"]},
                seconds={"ours": ours_s, "stock": stock_s, "residual": residual_s, "bare": forward_s})


def _paired_ratio(runs: list[tuple[float, float]], forward: list[tuple[float, int]]) -> float:
    """The median over rounds of a round's pipeline seconds / the same round's bare forward seconds: on a shared
    machine whose load drifts, a ratio of two runs taken together, which the minimum of each (taken at different
    moments) is not."""
    return float(np.median([run[0] / bare[0] for run, bare in zip(runs, forward)]))


def _shift_part(args, torch) -> dict:
    runs = [_shift_throughput(_network(), batch_size=args.shift_batch_size) for _ in range(args.repeats)]
    shift = max(runs, key=lambda r: r["tensor"])
    print(f"shift protocol extraction ({shift['n']} presentations of {SHIFT_SITE}, resnet18 {LAYER}, batch "
          f"{args.shift_batch_size}, torch threads {torch.get_num_threads()}): tensor path {shift['tensor']:.1f}/s, "
          f"PNG files {shift['files']:.1f}/s (+ {shift['render_s']:.1f} s rendering them once), bare forward "
          f"{shift['bare']:.1f}/s; tensor / bare {shift['tensor'] / shift['bare']:.2f} (target >= 0.8), files / bare "
          f"{shift['files'] / shift['bare']:.2f}; tensor and file responses identical: {shift['same']}; 1-min load at "
          f"bare/tensor/bare/files: {', '.join(f'{v:.1f}' for v in shift['loads'])}")
    return dict(ratios={"shift_vs_bare": shift["tensor"] / shift["bare"],
                        "shift_files_vs_bare": shift["files"] / shift["bare"]},
                seconds={f"shift_{k}": v for k, v in shift["seconds"].items()} | {"shift_render": shift["render_s"]},
                shift_identical=shift["same"], shift_load_1min=shift["loads"])


def _upstream_part(args, torch) -> dict:
    up = _upstream_seconds(_network())
    print(f"upstream-format NeuralBenchmark ({UPSTREAM_SITE}, resnet18 {UPSTREAM_LAYER} flattened, 10 splits): stock "
          f"{up['stock'][0]:.1f} s (score {up['stock'][1]:.4f}), exact {up['exact'][0]:.1f} s (score "
          f"{up['exact'][1]:.4f}), speed-up {up['stock'][0] / up['exact'][0]:.2f} x")
    return dict(ratios={"upstream_speedup": up["stock"][0] / up["exact"][0]},
                seconds={"upstream_stock": up["stock"][0], "upstream_exact": up["exact"][0]})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per pipeline (the minimum is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)")
    parser.add_argument("--shift-batch-size", type=int, default=64, help="batch size of the shift part")
    parser.add_argument("--json", action="store_true", help="also print one JSON object with the ratios")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks_it_maps.data.simulate import ensure_simulated_twin
    ensure_simulated_twin()  # full size: 14 images, grids 17 and 9
    load_before = os.getloadavg()
    results = [{"score": _score_part, "shift": _shift_part, "upstream": _upstream_part}[p](args, torch)
               for p in parts]
    load_after = os.getloadavg()
    print(f"machine load average (1, 5, 15 min) before: {', '.join(f'{v:.1f}' for v in load_before)}; after: "
          f"{', '.join(f'{v:.1f}' for v in load_after)}")
    if args.json:
        out = {"ratios": {}, "seconds": {}}
        for result in results:
            out["ratios"].update(result.pop("ratios"))
            out["seconds"].update(result.pop("seconds"))
            out.update(result)
        print(json.dumps({**out["ratios"], **out, "load_average": {"before": load_before, "after": load_after}}))


if __name__ == "__main__":
    main()
