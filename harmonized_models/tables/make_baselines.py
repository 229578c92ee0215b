"""Generate ``baselines.csv``: the timm ImageNet-1k baselines of the registry, with their top-1, category and layers.

Usage (offline; builds every model once with random weights to probe its layers, a few minutes on a CPU)::

    python harmonized_models/tables/make_baselines.py --results timm-results-imagenet.csv \
        [--metadata timm-model-metadata-in1k.csv] [--out harmonized_models/tables/baselines.csv]

Inputs are timm's published tables (``results-imagenet.csv`` from timm's ``results/`` folder, and the per-
architecture pretraining metadata); they are read, not copied. For every curated identifier (timm name with its
pretrained tag) the script takes

* top-1 from the results row measured at the model's default input size (the size the model is shown in Brain-Score),
  as a fraction, plus crop and interpolation from the same row;
* mean/std/input size/fixed-size flag from timm's pretrained config;
* the category, by this rule (first match wins):
  ``Robust`` = adversarially trained (tag ``adv``/``ens_adv``, or AdvProp ``ap``, which trains on adversarial
  examples); ``Self-supervised`` = fine-tuned from self-supervised/masked-image-modelling pretraining (tag ``mim``,
  ``mae``, ``fcmae``, ``dino``, or a BEiT architecture); ``Extra data`` = pretraining beyond ImageNet-1k (tag
  ``in21k``/``in22k``/``in12k``, ``jft`` (noisy student), ``ig1b`` (WSL/SWSL), ``yfcc100m`` (SSL), ``laion``/
  ``openai`` (CLIP)); otherwise ``Transformer`` if any module is an attention module, else ``CNN``;
* the region -> layer map and candidate layers of :func:`harmonized_models.layer_rules.commit_layers`;
* the behavioural readout layer (pre-logits features) of
  :func:`harmonized_models.layer_rules.behavioral_readout_layer`.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = Path("/work/shared/reference/timm-results-imagenet.csv")
DEFAULT_METADATA = Path("/work/shared/reference/timm-model-metadata-in1k.csv")

# Curated: moderate sizes (<= ~100 M parameters), families with a layer rule, every category, top-1 58 % .. 88.7 %.
MODELS = {
    "CNN": """
        resnet18.tv_in1k resnet18.a1_in1k resnet34.tv_in1k resnet50.tv_in1k resnet50.a1_in1k resnet50.tv2_in1k
        resnet101.tv_in1k resnet101.a1h_in1k resnet152.tv_in1k resnext50_32x4d.tv_in1k resnext101_32x8d.tv_in1k
        wide_resnet50_2.tv_in1k seresnext50_32x4d.racm_in1k resnet50d.ra2_in1k ecaresnet50t.ra2_in1k
        resnet26.bt_in1k res2net50_26w_4s.in1k resnest50d.in1k
        vgg11.tv_in1k vgg13.tv_in1k vgg16.tv_in1k vgg19.tv_in1k vgg16_bn.tv_in1k vgg11_bn.tv_in1k
        densenet121.tv_in1k densenet169.tv_in1k densenet201.tv_in1k inception_v3.tv_in1k inception_v3.tf_in1k
        inception_resnet_v2.tf_in1k
        efficientnet_b0.ra_in1k efficientnet_b3.ra2_in1k tf_efficientnet_b0.in1k tf_efficientnet_b1.in1k
        tf_efficientnet_b2.in1k tf_efficientnet_b3.in1k mobilenetv3_small_050.lamb_in1k
        mobilenetv3_small_075.lamb_in1k mobilenetv3_small_100.lamb_in1k mobilenetv3_large_100.ra_in1k
        mobilenetv2_100.ra_in1k tinynet_e.in1k tinynet_d.in1k tinynet_a.in1k mnasnet_100.rmsp_in1k
        mixnet_s.ft_in1k mixnet_l.ft_in1k fbnetc_100.rmsp_in1k spnasnet_100.rmsp_in1k lcnet_050.ra2_in1k
        ghostnet_100.in1k
        regnetx_002.pycls_in1k regnetx_016.pycls_in1k regnety_004.pycls_in1k regnety_016.tv2_in1k
        regnety_032.ra_in1k convnext_atto.d2_in1k convnext_femto.d1_in1k convnext_pico.d1_in1k
        convnext_nano.d1h_in1k convnext_tiny.fb_in1k convnext_small.fb_in1k convnext_base.fb_in1k
        nfnet_l0.ra2_in1k dm_nfnet_f0.dm_in1k cspresnet50.ra_in1k cspdarknet53.ra_in1k fastvit_t8.apple_in1k
        hgnet_tiny.paddle_in1k tf_efficientnetv2_b0.in1k efficientnetv2_rw_s.ra2_in1k regnetz_b16.ra3_in1k
        repvit_m1.dist_in1k
    """,
    "Transformer": """
        vit_small_patch16_224.augreg_in1k vit_base_patch16_224.augreg_in1k vit_base_patch32_224.augreg_in1k
        deit_tiny_patch16_224.fb_in1k deit_small_patch16_224.fb_in1k deit_base_patch16_224.fb_in1k
        deit_tiny_distilled_patch16_224.fb_in1k deit_small_distilled_patch16_224.fb_in1k
        deit_base_distilled_patch16_224.fb_in1k deit3_small_patch16_224.fb_in1k deit3_medium_patch16_224.fb_in1k
        deit3_base_patch16_224.fb_in1k cait_xxs24_224.fb_dist_in1k cait_s24_224.fb_dist_in1k
        xcit_tiny_12_p16_224.fb_in1k xcit_small_12_p16_224.fb_in1k levit_128s.fb_dist_in1k levit_128.fb_dist_in1k
        levit_192.fb_dist_in1k levit_256.fb_dist_in1k maxvit_tiny_tf_224.in1k maxvit_nano_rw_256.sw_in1k
        maxvit_small_tf_224.in1k coatnet_0_rw_224.sw_in1k coatnet_nano_rw_224.sw_in1k caformer_s18.sail_in1k
        efficientformer_l1.snap_dist_in1k edgenext_small.usi_in1k mobilevit_s.cvnets_in1k
        vit_base_patch16_224.sam_in1k pvt_v2_b0.in1k pvt_v2_b1.in1k pvt_v2_b2.in1k
    """,
    "Robust": """
        inception_v3.tf_adv_in1k inception_resnet_v2.tf_ens_adv_in1k tf_efficientnet_b0.ap_in1k
        tf_efficientnet_b1.ap_in1k tf_efficientnet_b2.ap_in1k tf_efficientnet_b3.ap_in1k tf_efficientnet_b4.ap_in1k
    """,
    "Self-supervised": """
        convnextv2_atto.fcmae_ft_in1k convnextv2_femto.fcmae_ft_in1k convnextv2_pico.fcmae_ft_in1k
        convnextv2_nano.fcmae_ft_in1k convnextv2_tiny.fcmae_ft_in1k convnextv2_base.fcmae_ft_in1k
        convnextv2_nano.fcmae_ft_in22k_in1k convnextv2_tiny.fcmae_ft_in22k_in1k
        beit_base_patch16_224.in22k_ft_in22k_in1k beitv2_base_patch16_224.in1k_ft_in1k
        beitv2_base_patch16_224.in1k_ft_in22k_in1k eva02_tiny_patch14_336.mim_in22k_ft_in1k
        eva02_small_patch14_336.mim_in22k_ft_in1k eva02_base_patch14_448.mim_in22k_ft_in22k_in1k
        eva02_base_patch14_448.mim_in22k_ft_in1k
    """,
    "Extra data": """
        tf_efficientnet_b0.ns_jft_in1k tf_efficientnet_b1.ns_jft_in1k tf_efficientnet_b2.ns_jft_in1k
        tf_efficientnet_b3.ns_jft_in1k resnet50.fb_swsl_ig1b_ft_in1k resnet18.fb_swsl_ig1b_ft_in1k
        resnext50_32x4d.fb_swsl_ig1b_ft_in1k resnext101_32x8d.fb_wsl_ig1b_ft_in1k resnet50.fb_ssl_yfcc100m_ft_in1k
        resnet18.fb_ssl_yfcc100m_ft_in1k vit_tiny_patch16_224.augreg_in21k_ft_in1k
        vit_small_patch16_224.augreg_in21k_ft_in1k vit_base_patch16_224.augreg_in21k_ft_in1k
        vit_base_patch16_224.augreg2_in21k_ft_in1k vit_base_patch16_224.orig_in21k_ft_in1k
        vit_base_patch32_224.augreg_in21k_ft_in1k vit_base_patch16_clip_224.openai_ft_in1k
        vit_base_patch16_clip_224.laion2b_ft_in1k convnext_tiny.fb_in22k_ft_in1k convnext_small.fb_in22k_ft_in1k
        convnext_tiny.in12k_ft_in1k convnext_nano.in12k_ft_in1k deit3_small_patch16_224.fb_in22k_ft_in1k
        deit3_base_patch16_224.fb_in22k_ft_in1k mobilenetv3_large_100.miil_in21k_ft_in1k
        tf_efficientnetv2_s.in21k_ft_in1k tf_efficientnetv2_b3.in21k_ft_in1k caformer_s18.sail_in22k_ft_in1k
        coatnet_rmlp_1_rw2_224.sw_in12k_ft_in1k resnetaa50d.sw_in12k_ft_in1k edgenext_base.in21k_ft_in1k
    """,
}

ROBUST = re.compile(r"(^|_)(adv|ens_adv|ap)(_|$)")
SELF_SUPERVISED = re.compile(r"(^|_)(mim|mae|fcmae|dino|dinov2)(_|$)")
EXTRA_DATA = re.compile(r"in21k|in22k|in12k|jft|ig1b|yfcc100m|laion|openai|m38m|merged")
ATTENTION = re.compile(r"Attn|Attention|XCA")
NOT_TRANSFORMER = {"SplitAttn"}  # ResNeSt's split attention is a channel gating, not self-attention
COLUMNS = ("identifier", "architecture", "tag", "category", "family", "rule", "pretraining", "image_size", "mean",
           "std", "interpolation", "crop_pct", "top1", "top1_source", "param_count_m", "fixed_input_size",
           "region_layer_map", "candidate_layers", "behavioral_readout_layer")


def categorize(identifier: str, model: torch.nn.Module) -> str:
    """The category rule of the module docstring."""
    architecture, _, tag = identifier.partition(".")
    if ROBUST.search(tag):
        return "Robust"
    if SELF_SUPERVISED.search(tag) or architecture.startswith("beit"):
        return "Self-supervised"
    if EXTRA_DATA.search(tag):
        return "Extra data"
    if any(ATTENTION.search(type(m).__name__) and type(m).__name__ not in NOT_TRANSFORMER for m in model.modules()):
        return "Transformer"
    return "CNN"


def pretraining_label(identifier: str, metadata: dict[str, str]) -> str:
    """timm's pretraining label of the architecture (e.g. ``in21k``, ``in1k-dist``) and the weights tag."""
    architecture, _, tag = identifier.partition(".")
    label = metadata.get(architecture) or metadata.get(architecture.replace("_conv_", "_")) or "n/a"
    return f"{label} ({tag})"


def read_results(path: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["model"], []).append(row)
    return rows


def results_row(identifier: str, image_size: int, results: dict[str, list[dict[str, str]]], path: Path) -> dict:
    rows = results.get(identifier)
    if not rows:
        raise ValueError(f"{path}: no row for {identifier}")
    exact = [r for r in rows if int(r["img_size"]) == image_size]
    return exact[0] if exact else min(rows, key=lambda r: abs(int(r["img_size"]) - image_size))


def make_row(identifier: str, expected_category: str, results, results_path: Path, metadata) -> dict:
    import timm
    from harmonized_models.layer_rules import behavioral_readout_layer, commit_layers
    torch.manual_seed(0)
    model = timm.create_model(identifier, pretrained=False).eval()
    cfg = model.pretrained_cfg
    image_size = int(cfg["input_size"][-1])
    category = categorize(identifier, model)
    if category != expected_category:
        raise ValueError(f"{identifier}: curated as {expected_category} but the rule says {category}")
    row = results_row(identifier, image_size, results, results_path)
    rule = commit_layers(model, image_size)
    return {
        "identifier": identifier, "architecture": identifier.partition(".")[0],
        "tag": identifier.partition(".")[2], "category": category, "family": rule.family, "rule": rule.kind,
        "pretraining": pretraining_label(identifier, metadata), "image_size": image_size,
        "mean": json.dumps([round(float(v), 6) for v in cfg["mean"]]),
        "std": json.dumps([round(float(v), 6) for v in cfg["std"]]),
        "interpolation": row["interpolation"] or cfg.get("interpolation", "bilinear"),
        "crop_pct": float(row["crop_pct"]), "top1": round(float(row["top1"]) / 100, 5),
        "top1_source": f"timm results-imagenet.csv: {identifier} @ {row['img_size']} px",
        "param_count_m": float(row["param_count"].replace(",", "")),
        "fixed_input_size": bool(cfg.get("fixed_input_size", False)),
        "region_layer_map": json.dumps(rule.region_layer_map), "candidate_layers": json.dumps(rule.candidate_layers),
        "behavioral_readout_layer": behavioral_readout_layer(model, image_size),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--metadata", type=Path, default=DEFAULT_METADATA)
    parser.add_argument("--out", type=Path, default=HERE / "baselines.csv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_grad_enabled(False)
    results = read_results(args.results)
    metadata = {}
    if args.metadata.exists():
        with open(args.metadata, newline="") as f:
            metadata = {r["model"]: r["pretrain"] for r in csv.DictReader(f)}
    rows, errors = [], []
    for category, names in MODELS.items():
        for identifier in names.split():
            start = time.time()
            try:
                rows.append(make_row(identifier, category, results, args.results, metadata))
            except Exception as error:  # noqa: BLE001 - collect them all, then fail
                errors.append(f"{identifier}: {type(error).__name__}: {error}")
                logging.error(errors[-1])
                continue
            logging.info("%-50s %-15s top1 %.3f  IT %s (%.1f s)", identifier, category, rows[-1]["top1"],
                         json.loads(rows[-1]["region_layer_map"])["IT"], time.time() - start)
    if errors:
        print("\n".join(["errors:", *errors]), file=sys.stderr)
        return 1
    identifiers = [r["identifier"] for r in rows]
    assert len(set(identifiers)) == len(identifiers), "duplicate identifiers"
    top1 = [r["top1"] for r in rows]
    assert min(top1) < 0.60 and max(top1) > 0.88, (min(top1), max(top1))
    from benchmarks_it_maps.home import atomic_file
    with atomic_file(args.out) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    print(f"wrote {len(rows)} models to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
