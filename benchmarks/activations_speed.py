"""Activations extraction only: brainscore-vision's PytorchWrapper vs TorchActivationsModel vs a bare forward loop.

Same network (ResNet-18, random weights, seed 0), same images (``--images`` random-texture PNGs, 256 px, written to
a temporary folder), same layer (``layer3``), same device. The stock wrapper pads every batch to 64 images and runs
the whole network; ours decodes with a thread pool, does not pad, stops after the last hooked layer and uses
channels-last (autocast is off on the CPU). Usage: ``python benchmarks/activations_speed.py [--images 28]
[--device auto] [--threads N]``. Prints images/second of each and the ratios.
"""
from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RESULTCACHING_DISABLE", "1")
os.environ.setdefault("BS_INSTALL_DEPENDENCIES", "no")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=28)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper, load_preprocess_images
    from harmonized_models.activations import TorchActivationsModel, resolve_device
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    folder = Path(tempfile.mkdtemp(prefix="activations-speed-"))
    rng = np.random.RandomState(0)
    paths = []
    for i in range(args.images):
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(rng.randint(0, 256, (256, 256, 3), dtype=np.uint8)).save(paths[-1])
    torch.manual_seed(0)
    network = timm.create_model("resnet18", pretrained=False).eval()

    def timed(fn) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        return args.images / (time.perf_counter() - start)

    stock = PytorchWrapper(network, functools.partial(load_preprocess_images, image_size=224), identifier="r18")
    ours = TorchActivationsModel(network, "r18", 224, device=device)
    rates = {"stock PytorchWrapper": timed(lambda: stock(paths, layers=["layer3"])),
             "TorchActivationsModel": timed(lambda: ours(paths, layers=["layer3"]))}
    batch = ours.last_batch_size
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    model = ours._model

    def bare():
        with torch.inference_mode():
            done = 0
            while done < args.images:
                model(x[: min(batch, args.images - done)])
                done += batch
        if device.type == "cuda":
            torch.cuda.synchronize()
    rates["bare forward (full network)"] = timed(bare)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.images} images, batch {batch}")
    for name, rate in rates.items():
        print(f"  {name:30s} {rate:8.1f} images/s")
    print(f"  ours / stock {rates['TorchActivationsModel'] / rates['stock PytorchWrapper']:.2f}x; "
          f"ours / bare {rates['TorchActivationsModel'] / rates['bare forward (full network)']:.2f}x")


if __name__ == "__main__":
    main()
