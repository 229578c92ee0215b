"""Tiny random-weight harmonizer checkpoints (``harmonized:PATH``) shared by the sweep and plugin tests."""
from __future__ import annotations

from pathlib import Path


def make_tiny_model(folder: Path, seed: int) -> str:
    """A random-weight timm test_resnet at 64 px as a harmonizer checkpoint; returns its model identifier."""
    import timm
    import torch
    from harmonized_models.harmonizer.checkpoint import save_final
    torch.manual_seed(seed)
    network = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    save_final(network, folder, architecture="test_resnet", num_classes=10, image_size=64,
               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), it_layer="layer2")
    return f"harmonized:{folder}"
