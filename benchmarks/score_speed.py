"""How fast is ``Arcaro2020sim.IT-pls`` with our activations pipeline, compared with Brain-Score's stock one?

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

Usage: ``python benchmarks/score_speed.py [--repeats 1] [--threads N]``. Prints the figures and the ratio.
"""
from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("RESULTCACHING_DISABLE", "1")
os.environ.setdefault("BS_INSTALL_DEPENDENCIES", "no")
os.environ.setdefault("BRAINSCORE_SKIP_MEMORY_CHECK", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

BENCHMARK = "Arcaro2020sim.IT-pls"
LAYER = "layer3"


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


def _look_at_seconds(candidate, benchmark) -> float:
    """Only the BrainModel part of the work: whole-image ``look_at`` of each monkey's images, as the benchmark does."""
    from benchmarks_it_maps.benchmarks.arcaro2020 import record_responses
    seen, start = set(), time.perf_counter()
    for child in benchmark.children:
        if child.data.stimulus_set.identifier not in seen:
            seen.add(child.data.stimulus_set.identifier)
            record_responses(candidate, child.data.window, child.data.stimulus_set)
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
    start = time.perf_counter()
    with torch.inference_mode():
        network(batch)
    return time.perf_counter() - start, len(unique)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per pipeline (the minimum is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks_it_maps import load_benchmark
    from benchmarks_it_maps.data.simulate import ensure_simulated_twin

    start = time.perf_counter()
    ensure_simulated_twin()  # full size: 14 images, grids 17 and 9
    prepared = load_benchmark(BENCHMARK)
    for child in prepared.children:
        child.ceiling  # loads the data and computes the ceiling once
    setup = time.perf_counter() - start

    def factory(solver: str):
        benchmark = load_benchmark(BENCHMARK)
        for fresh, loaded in zip(benchmark.children, prepared.children):
            fresh._data, fresh._ceiling_score = loaded.data, loaded.ceiling
            fresh.pls_solver = solver
        return benchmark

    network = _network()
    ours = [_timed_score(functools.partial(factory, "exact"), _ours(network)) for _ in range(args.repeats)]
    stock = [_timed_score(functools.partial(factory, "sklearn"), _stock(network)) for _ in range(args.repeats)]
    forward = [_forward_seconds(network, prepared) for _ in range(args.repeats)]
    look_ours = min(_look_at_seconds(_ours(network), prepared) for _ in range(args.repeats))
    look_stock = min(_look_at_seconds(_stock(network), prepared) for _ in range(args.repeats))
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
    print(f"look_at only: ours {look_ours:.2f} s, stock {look_stock:.2f} s, speed-up {look_stock / look_ours:.2f} x; "
          f"the rest of each run ({ours_s - look_ours:.1f} s ours, {stock_s - look_stock:.1f} s stock) is the "
          f"leave-one-image-out PLS")
    print(f"ours vs bare forward pass      {ours_s / forward_s:8.2f} x slower (metric + packaging)")
    if abs(ours_score - stock_score) > 1e-3:
        print(f"WARNING: the two pipelines disagree on the score ({ours_score:.6f} vs {stock_score:.6f})")


if __name__ == "__main__":
    main()
