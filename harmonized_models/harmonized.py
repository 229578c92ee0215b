"""The seven released harmonized networks (Fel et al. 2022; Linsley et al. 2023), as PyTorch modules.

The authors released Keras ``.h5`` files only (PAPER_NOTES section 5).  ``load_harmonized_network(name)`` downloads
the file once (progress bar; sha256 recorded in ``data_home()/weights/harmonized/manifest.json``), converts it once
with :func:`harmonized_models.keras.convert_keras` (every tensor mapped or the file is refused) and caches the
safetensors next to it; later calls only read the safetensors.  Without network, place the ``.h5`` at the path the
error message names (``harmonized_h5_path(name)``), or set ``BRAINSCORE_ITMAPS_HARMONIZED_URL`` to a mirror (any
URL prefix, ``file://`` included).

Preprocessing (all seven): the Harmonization repository feeds every model ``preprocess_input`` = RGB / 255, minus
the ImageNet mean, divided by the ImageNet std (``harmonization/models/preprocess.py``), i.e. exactly
``Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)`` (the neural_harmonizer code's division by the mean is a
bug, PAPER_NOTES 6.1, not copied).  The EfficientNetB0 network additionally replays whatever input layers its file
contains (none in qubvel's ``efficientnet`` EfficientNetB0, which the Harmonization repository imports to load it;
``rescaling``/``normalization``/``rescaling_1`` in a keras.applications file), read from the file by the converter.
Images are resized to 224 x 224 with bilinear interpolation, no crop (the Brain-Score convention of
:mod:`harmonized_models.preprocessing`).

Top-1 values are read off the released figures (PAPER_NOTES 3: neural_harmonizer ``docs/assets/results.png``; the
ViT-B16, absent there, from Harmonization ``docs/assets/imagenet_results.png``), about +-1 percentage point.
Layer commitments follow :mod:`harmonized_models.layer_rules` (IT = end of the stride-16 stage), so harmonized and
baseline networks are scored at comparable depths; the layers the authors' notebook picked (ResNet50 ``add_15``,
``activation_46``) are among the candidates.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

log = logging.getLogger(__name__)

BASE_URL = "https://storage.googleapis.com/serrelab/prj_harmonization/models/"
BASE_URL_ENV = "BRAINSCORE_ITMAPS_HARMONIZED_URL"
OFFLINE_ENV = "BRAINSCORE_ITMAPS_OFFLINE"
PREPROCESSING = Preprocessing(image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear",
                              crop_pct=1.0)
FIGURE_SOURCE = "Linsley et al. 2023, neural_harmonizer docs/assets/results.png (read off the figure, +-1 pt)"


class HarmonizedWeightsError(RuntimeError):
    """The harmonized weights cannot be obtained or do not verify (message names the URL and the cache path)."""


def _random_builder(arch: str, config: dict) -> Callable[[], Any]:
    def build():
        from .keras.convert import build_network

        return build_network(arch, config)

    return build


def _kecam_builder(arch: str) -> Callable[[], Any]:
    def build():
        from .keras.kecam import build_timm

        return build_timm(arch)

    return build


@dataclass(frozen=True)
class HarmonizedSpec:
    """One released harmonized network: where its file is, how to convert it, and how to commit it."""

    identifier: str
    filename: str
    arch: str                               # converter arch (harmonized_models.keras.convert.ARCHS)
    builder: Callable[[], Any]              # random-weight network with the same structure (tests, layer probing)
    top1: float                             # ImageNet top-1, fraction
    top1_source: str
    it_layer: str
    region_layer_map: dict[str, str]
    candidate_layers: tuple[str, ...]
    twin: str | None                        # timm id of the unharmonized twin with public weights
    preprocessing: Preprocessing = PREPROCESSING
    sha256: str | None = None               # None: unknown upstream; the first download's is recorded
    behavioral_readout_layer: str = ""      # pre-logits features (layer_rules.behavioral_readout_layer)
    notes: str = ""

    @property
    def url(self) -> str:
        base = os.environ.get(BASE_URL_ENV) or BASE_URL
        return base.rstrip("/") + "/" + self.filename


_RESNET_PAPER_LAYERS = ("layer4.2.relu1", "layer4.2.conv2", "layer4.2.add")  # activation_46, res5c_branch2b, add_15

HARMONIZED: dict[str, HarmonizedSpec] = {spec.identifier: spec for spec in (
    HarmonizedSpec(
        "harmonized_vgg16", "vgg16_harmonized.h5", "vgg16",
        _random_builder("vgg16", {"num_classes": 1000, "fc1_spatial": 7}),
        top1=0.69, top1_source=FIGURE_SOURCE, it_layer="features.29",
        region_layer_map={"V1": "features.15", "V2": "features.22", "V4": "features.27", "IT": "features.29"},
        candidate_layers=("features.22", "features.25", "features.27", "features.29"),
        behavioral_readout_layer="pre_logits",
        twin="vgg16.tv_in1k", notes="Keras VGG16 -> timm vgg16; features.29 = block5_conv3 (ReLU)"),
    HarmonizedSpec(
        "harmonized_resnet50", "resnet50v2_harmonized.h5", "resnet50",
        _random_builder("resnet50", {"naming": "caffe", "eps": 1e-3, "stride_in_1x1": True, "maxpool_padding": 1,
                                     "num_classes": 1000}),
        top1=0.77, top1_source=FIGURE_SOURCE, it_layer="layer3.5",
        region_layer_map={"V1": "layer1.2", "V2": "layer2.3", "V4": "layer3.2", "IT": "layer3.5"},
        candidate_layers=("layer2.3", "layer3.0", "layer3.1", "layer3.2", "layer3.3", "layer3.4", "layer3.5",
                          "layer4.0", "layer4.1", "layer4.2", *_RESNET_PAPER_LAYERS),
        behavioral_readout_layer="global_pool",
        twin="resnet50.tv_in1k",
        notes="file named 'resnet50v2' but holds the caffe-named ResNet50 v1 (res5c_branch2b, add_15): "
              "CaffeResNet50 (stride on the 1x1 conv, biased convs, BN eps from the file); twin is torchvision's "
              "v1.5 ResNet50 (Keras' own ResNet50 weights are not in timm)"),
    HarmonizedSpec(
        "harmonized_efficientnet_b0", "efficientnetB0_harmonized.h5", "efficientnet_b0",
        _random_builder("efficientnet_b0", {"eps": 1e-3, "num_classes": 1000, "input_scale": [1.0, 1.0, 1.0],
                                            "input_offset": [0.0, 0.0, 0.0], "input_layers": []}),
        top1=0.757, top1_source=FIGURE_SOURCE, it_layer="blocks.4.2",
        region_layer_map={"V1": "blocks.1.1", "V2": "blocks.2.1", "V4": "blocks.3.2", "IT": "blocks.4.2"},
        candidate_layers=("blocks.2.1", "blocks.3.0", "blocks.3.1", "blocks.3.2", "blocks.4.0", "blocks.4.1",
                          "blocks.4.2", "blocks.5.0", "blocks.5.1", "blocks.5.2", "blocks.5.3", "blocks.6.0"),
        behavioral_readout_layer="global_pool",
        twin="tf_efficientnet_b0.in1k",
        notes="timm tf_efficientnet_b0 (TF 'same' padding, BN eps 1e-3) plus the file's own input layers"),
    HarmonizedSpec(
        "harmonized_vit_b16", "vit-b16_harmonized.h5", "vit_b16",
        _random_builder("vit_b16", {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12,
                                    "mlp_ratio": 4.0, "img_size": 224, "num_classes": 1000, "norm_eps": 1e-6}),
        top1=0.757, top1_source="Fel et al. 2022, Harmonization docs/assets/imagenet_results.png (read off the "
                                "figure, +-1 pt; not plotted in the neural_harmonizer figure)",
        it_layer="blocks.8",
        region_layer_map={"V1": "blocks.1", "V2": "blocks.3", "V4": "blocks.5", "IT": "blocks.8"},
        candidate_layers=tuple(f"blocks.{i}" for i in range(3, 12)),
        behavioral_readout_layer="fc_norm",
        twin="vit_base_patch16_224.orig_in21k_ft_in1k", notes="vit-keras 0.1.2 -> timm vit_base_patch16_224"),
    # kecam models (mapping: harmonized_models.keras.kecam). Layers = harmonized_models.layer_rules applied to
    # the timm network (IT = end of the stride-16 stage), identical to the rule's choice for the twin.
    HarmonizedSpec(
        "harmonized_levit_128", "levit_small_harmonized.h5", "levit128", _kecam_builder("levit128"),
        top1=0.753, top1_source=FIGURE_SOURCE, it_layer="stages.0.blocks.3",
        region_layer_map={"V1": "stages.0.blocks.0", "V2": "stages.0.blocks.0", "V4": "stages.0.blocks.2",
                          "IT": "stages.0.blocks.3"},
        candidate_layers=tuple(f"stages.{i}.blocks.{j}" for i in range(3) for j in range(4)),
        behavioral_readout_layer="stages",
        twin="levit_128.fb_dist_in1k",
        notes="file 'levit_small' built as kecam LeViT128 (PAPER_NOTES 5) -> timm levit_conv_128 (kecam.py, D2)"),
    HarmonizedSpec(
        "harmonized_convnext_tiny", "convnext_tiny_harmonized.h5", "convnext_tiny", _kecam_builder("convnext_tiny"),
        top1=0.773, top1_source=FIGURE_SOURCE, it_layer="stages.2.blocks.8",
        region_layer_map={"V1": "stages.0.blocks.2", "V2": "stages.1.blocks.2", "V4": "stages.2.blocks.4",
                          "IT": "stages.2.blocks.8"},
        candidate_layers=("stages.1.blocks.2", *(f"stages.2.blocks.{j}" for j in range(9)),
                          *(f"stages.3.blocks.{j}" for j in range(3))),
        behavioral_readout_layer="head.norm",
        twin="convnext_tiny.fb_in1k", notes="kecam ConvNeXtTiny -> timm convnext_tiny (kecam.py, D2)"),
    HarmonizedSpec(
        "harmonized_maxvit_tiny", "maxvit_tiny_harmonized.h5", "maxvit_tiny", _kecam_builder("maxvit_tiny"),
        top1=0.783, top1_source=FIGURE_SOURCE, it_layer="stages.2.blocks.4",
        region_layer_map={"V1": "stages.0.blocks.1", "V2": "stages.1.blocks.1", "V4": "stages.2.blocks.2",
                          "IT": "stages.2.blocks.4"},
        candidate_layers=("stages.1.blocks.1", *(f"stages.2.blocks.{j}" for j in range(5)), "stages.3.blocks.0",
                          "stages.3.blocks.1"),
        behavioral_readout_layer="head.pre_logits",
        twin="maxvit_tiny_tf_224.in1k", notes="kecam MaxViT_Tiny -> timm maxvit_tiny_tf_224 (kecam.py, D2)"),
)}


# ============================================================================================ cache layout
def weights_dir() -> Path:
    """``data_home()/weights/harmonized``: downloaded ``.h5`` files, converted safetensors, manifest."""
    from benchmarks_it_maps.home import data_home

    return data_home() / "weights" / "harmonized"


def get_spec(name: str) -> HarmonizedSpec:
    if name not in HARMONIZED:
        import difflib

        close = difflib.get_close_matches(name, list(HARMONIZED), n=3)
        raise KeyError(f"unknown harmonized model {name!r}; known: {', '.join(HARMONIZED)}"
                       + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return HARMONIZED[name]


def harmonized_h5_path(name: str) -> Path:
    """Where the downloaded (or hand-placed) ``.h5`` of ``name`` lives."""
    return weights_dir() / get_spec(name).filename


def converted_path(name: str) -> Path:
    """Where the converted safetensors of ``name`` is cached."""
    return weights_dir() / f"{get_spec(name).identifier}.safetensors"


def manifest_path() -> Path:
    return weights_dir() / "manifest.json"


def read_manifest() -> dict:
    path = manifest_path()
    if not path.exists():
        return {"files": {}, "converted": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HarmonizedWeightsError(f"{path}: corrupt manifest ({exc}); delete it to re-verify the files") from None
    data.setdefault("files", {})
    data.setdefault("converted", {})
    return data


def _write_manifest(data: dict) -> None:
    from benchmarks_it_maps.home import atomic_file

    with atomic_file(manifest_path()) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


# ============================================================================================ download
def download(url: str, dest: Path, expected_sha256: str | None = None, chunk_size: int = 1 << 20) -> str:
    """Download ``url`` to ``dest`` atomically with a tqdm bar; returns the sha256.

    Refuses (nothing written) when ``expected_sha256`` is given and does not match.
    """
    import hashlib

    from tqdm.auto import tqdm

    from benchmarks_it_maps.home import atomic_file

    digest = hashlib.sha256()
    with atomic_file(dest) as tmp:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                for chunk in iter(lambda: response.read(chunk_size), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        sha = digest.hexdigest()
        if expected_sha256 and sha != expected_sha256:
            raise HarmonizedWeightsError(f"{url}: sha256 {sha} does not match the expected {expected_sha256}; "
                                         f"nothing was written to {dest}")
    return sha


def _unavailable(spec: HarmonizedSpec, path: Path, reason: str) -> HarmonizedWeightsError:
    return HarmonizedWeightsError(
        f"{spec.identifier}: weights not available ({reason}). Download {spec.url} and place it at {path} "
        f"(or set {BASE_URL_ENV} to a mirror), then retry.")


def fetch_h5(name: str) -> tuple[Path, str]:
    """Path and sha256 of the verified ``.h5`` of ``name``, downloading it once if it is not cached."""
    from benchmarks_it_maps.home import sha256_file

    spec = get_spec(name)
    path = harmonized_h5_path(name)
    manifest = read_manifest()
    known = spec.sha256 or manifest["files"].get(spec.filename, {}).get("sha256")
    if path.exists():
        sha = sha256_file(path)
        if known and sha != known:
            raise HarmonizedWeightsError(f"{path}: sha256 {sha} does not match the expected {known} "
                                         f"(recorded in {manifest_path()} or the spec); delete the file and retry")
    else:
        if os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes"):
            raise _unavailable(spec, path, f"{OFFLINE_ENV} is set")
        log.info("downloading %s -> %s", spec.url, path)
        try:
            sha = download(spec.url, path, known)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise _unavailable(spec, path, f"download failed: {exc}") from None
    if spec.filename not in manifest["files"] or manifest["files"][spec.filename].get("sha256") != sha:
        manifest["files"][spec.filename] = {"sha256": sha, "url": spec.url, "bytes": path.stat().st_size,
                                            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_manifest(manifest)
    return path, sha


def load_harmonized_network(name: str):
    """The harmonized network ``name`` (torch, eval mode) with the released weights.

    Downloads the ``.h5`` once (sha256 recorded / verified), converts it once (cached safetensors), then loads.
    On any failure nothing is cached.
    """
    from safetensors import safe_open

    from .keras.convert import convert_keras, load_converted

    spec = get_spec(name)
    out = converted_path(name)
    manifest = read_manifest()
    recorded = manifest["files"].get(spec.filename, {}).get("sha256")
    if out.exists():
        with safe_open(str(out), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("arch") == spec.arch and (meta.get("source_sha256") in (recorded, spec.sha256)) \
                and meta.get("source_sha256"):
            return load_converted(out)
        log.warning("%s: cached conversion does not match the recorded source file; converting again", out)
    h5_path, sha = fetch_h5(name)
    report = convert_keras(h5_path, spec.arch, out)
    manifest = read_manifest()
    manifest["converted"][spec.identifier] = {"path": out.name, "arch": spec.arch, "source_sha256": sha,
                                              "config": report["config"]}
    _write_manifest(manifest)
    return load_converted(out)
