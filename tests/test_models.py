"""Model registry: integrity of every entry, load_model, checkpoints, EfficientNet-Lite with real weights."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
from brainscore_vision.model_helpers.brain_transformation import ModelCommitment
from brainscore_vision.model_interface import BrainModel

import harmonized_models
from harmonized_models import baselines, registry
from harmonized_models.commitment import region_layer_map_path, store_region_layer_map
from harmonized_models.layer_rules import commit_layers

BASELINE_CATEGORIES = ("CNN", "Transformer", "Robust", "Self-supervised", "Extra data")
SMALL = 112


@pytest.fixture(scope="module")
def entries() -> list:
    return harmonized_models.list_models()


@pytest.fixture(scope="module")
def natural_images(tmp_path_factory) -> StimulusSet:
    """Two photographs shipped with scikit-image: a tabby cat and a cup of espresso."""
    import skimage.data
    folder = tmp_path_factory.mktemp("natural")
    paths = {}
    for name in ("chelsea", "coffee"):
        paths[name] = str(folder / f"{name}.png")
        Image.fromarray(getattr(skimage.data, name)()).save(paths[name])
    stimuli = StimulusSet([{"stimulus_id": name, "photo": name} for name in paths])
    stimuli.stimulus_paths = paths
    stimuli.identifier = "test-models-natural"
    return stimuli


# --- registry integrity --------------------------------------------------------------------------------------------
def test_baselines_cover_categories_and_accuracy_range(entries):
    timm_entries = [e for e in entries if e.weights_source.startswith("timm:")]
    assert len(timm_entries) >= 100
    assert {e.category for e in timm_entries} == set(BASELINE_CATEGORIES)
    top1 = [e.top1 for e in timm_entries]
    assert min(top1) < 0.60 and max(top1) > 0.88
    pretrained = set(timm.list_pretrained())
    for entry in timm_entries:
        assert re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", entry.identifier), entry.identifier
        assert entry.identifier in pretrained, entry.identifier
        assert entry.top1_source.startswith(f"timm results-imagenet.csv: {entry.identifier} @")


def test_every_entry_has_complete_metadata(entries):
    identifiers = [e.identifier for e in entries]
    assert len(set(identifiers)) == len(identifiers)
    for entry in entries:
        assert entry.category in registry.CATEGORIES
        assert set(entry.region_layer_map) == {"V1", "V2", "V4", "IT"}
        assert entry.region_layer_map["IT"] in entry.candidate_layers, entry.identifier
        assert entry.top1 is None or 0.3 < entry.top1 < 0.95, entry.identifier
        assert entry.top1 is None or entry.top1_source
        assert entry.weights_source and entry.visual_degrees == 8
        assert entry.preprocessing.image_size >= 64 and len(entry.preprocessing.mean) == 3
        assert entry.harmonized == (entry.category == "Harmonized")
        json.dumps(entry.metadata())  # JSON-serialisable for `brainscore list models`


def _run_once(network, layers, size: int, readout: str | None = None) -> tuple[tuple, dict, dict]:
    """One random image through ``network``: its output shape, the output shape of each of ``layers``, and (with
    ``readout``) the execution order of those layers, the readout layer's output and what the classifier reads:
    the inputs of the last ``nn.Linear`` / 1 x 1 conv with 1000 outputs that runs, and of the modules containing
    it (an MLP head such as CAFormer's ``head.fc`` is part of the classifier)."""
    modules = dict(network.named_modules())
    shapes: dict = {}
    seen: dict = {"order": [], "inputs": {}}

    def record(name, output):
        shapes[name] = tuple(output.shape)
        seen["order"].append(name)
        if name == readout:
            seen["readout"] = output.detach().clone()

    def input_of(name, module, inputs):
        if isinstance(inputs[0], torch.Tensor) and inputs[0].numel() <= 1 << 16:
            seen["inputs"][name] = inputs[0].detach().clone()
        if isinstance(module, torch.nn.Linear) and module.out_features == 1000 or \
                isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.out_channels == 1000:
            seen["classifier"] = name

    handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: record(name, o))
               for name in {*layers, *([readout] if readout else [])}]
    if readout:
        handles += [m.register_forward_pre_hook(lambda m, i, name=name: input_of(name, m, i))
                    for name, m in modules.items() if name]
    try:
        with torch.inference_mode():
            output = network(torch.randn(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    if readout and "classifier" in seen:
        classifier = seen["classifier"]
        seen["classifier_inputs"] = [seen["inputs"][name] for name in seen["inputs"]
                                     if name == classifier or classifier.startswith(name + ".")]
    return tuple(output.shape), shapes, seen


def test_every_entry_runs_with_random_weights(entries):
    """EVERY registry entry is built with random weights (seed 0) and runs one image: committed and candidate layers
    exist, every committed layer fires, the output has 1000 classes and the IT layer gives a spatial map
    (channels-first feature map or a square grid of tokens after at most 8 class/register tokens).

    Fast path: built under ``torch.no_grad`` and run at SMALL px; architectures whose window or relative-position
    tables need their own input size (MaxViT, CoAtNet, EfficientFormer, LeViT, the Keras-sized harmonized ViT/LeViT/
    MaxViT, ...) run at their preprocessing size instead. Measured on the 2-core machine (169 networks, 5.1 billion
    parameters to initialise): 46-136 s wall (93-152 s CPU) depending on the other jobs running, 2.4 GB peak
    memory; it replaces a meta-device construction test plus one real network per family (23 s together).
    """
    at_own_size, exact = [], 0
    for entry in entries:
        torch.manual_seed(0)
        with torch.no_grad():
            network = entry.build(pretrained=False, image_size=SMALL)
        modules = dict(network.named_modules())
        missing = [l for l in {*entry.region_layer_map.values(), *entry.candidate_layers} if l not in modules]
        assert not missing, f"{entry.identifier}: missing layers {missing}"
        size, layers = SMALL, list(dict.fromkeys([*entry.region_layer_map.values(), *entry.candidate_layers]))
        readout = entry.behavioral_readout_layer
        assert readout in modules, f"{entry.identifier}: behavioral_readout_layer {readout!r} is not a module"
        try:
            output, shapes, seen = _run_once(network, layers, size, readout)
        except (RuntimeError, AssertionError):  # e.g. timm's "height (28) must be divisible by window (3)"
            size = entry.preprocessing.image_size
            at_own_size.append(entry.identifier)
            if entry.fixed_input_size:
                with torch.no_grad():
                    network = entry.build(pretrained=False, image_size=size)
            output, shapes, seen = _run_once(network, layers, size, readout)
        assert output == (1, 1000), (entry.identifier, output)
        assert set(entry.region_layer_map.values()) <= set(shapes), entry.identifier
        _assert_pre_logits(entry.identifier, readout, layers, seen)
        exact += _reads_exactly_the_classifier_input(seen)
        it = shapes[entry.region_layer_map["IT"]]
        if len(it) == 4:
            assert it[2] == it[3] and it[2] >= 2, (entry.identifier, size, it)
        else:
            side = int(np.sqrt(it[1]))
            assert len(it) == 3 and side >= 2 and it[1] - side * side <= 8, (entry.identifier, size, it)
        del network, modules
    assert len(at_own_size) <= len(entries) // 10, at_own_size  # the fast path stays the rule
    assert exact >= 0.9 * len(entries), exact  # the rule's fallbacks (token view, last module) stay exceptions


def _reads_exactly_the_classifier_input(seen: dict) -> bool:
    flat = seen["readout"].reshape(1, -1)
    return any(flat.shape == target.reshape(1, -1).shape and torch.allclose(flat, target.reshape(1, -1))
               for target in seen["classifier_inputs"])


def _assert_pre_logits(identifier: str, readout: str, layers: list, seen: dict) -> None:
    """The behavioural readout is the pre-logits features: it runs after every committed and candidate layer,
    and the classifier reads it (the same values, or a token / the token mean of it: ViT distilled, LeViT)."""
    order = seen["order"]
    assert "readout" in seen and seen.get("classifier_inputs"), identifier
    assert readout not in layers and order.index(readout) > max(order.index(layer) for layer in layers), \
        (identifier, readout, order)
    if _reads_exactly_the_classifier_input(seen):
        return
    features = seen["readout"]
    for target in (t.reshape(-1) for t in seen["classifier_inputs"]):
        if features.numel() % target.numel():
            continue
        tokens = features.reshape(features.shape[0], -1, target.numel())  # (1, tokens, features)
        channels_first = features.reshape(features.shape[0], target.numel(), -1)  # (1, features, positions)
        if any(torch.allclose(tokens[0, t], target) for t in range(tokens.shape[1])) \
                or torch.allclose(tokens[0].mean(0), target, atol=1e-5) \
                or torch.allclose(channels_first[0].mean(-1), target, atol=1e-5):
            return
    raise AssertionError(f"{identifier}: the classifier does not read {readout!r} {tuple(features.shape)}")


def test_table_layers_follow_the_documented_rule(entries):
    """The layers stored in baselines.csv are what layer_rules.commit_layers gives today (small networks)."""
    by_id = {e.identifier: e for e in entries}
    for identifier in ("resnet18.tv_in1k", "mobilenetv3_small_050.lamb_in1k", "deit_tiny_patch16_224.fb_in1k",
                       "convnext_atto.d2_in1k", "efficientnet_lite0"):
        entry = by_id[identifier]
        rule = commit_layers(entry.build(pretrained=False), entry.preprocessing.image_size)
        assert rule.region_layer_map == dict(entry.region_layer_map), identifier
        assert tuple(rule.candidate_layers) == entry.candidate_layers, identifier


def test_layer_rules_known_answers():
    resnet = commit_layers(timm.create_model("resnet18", pretrained=False), 224)
    assert resnet.kind == "hierarchical"
    assert resnet.region_layer_map == {"V1": "layer1.1", "V2": "layer2.1", "V4": "layer3.0", "IT": "layer3.1"}
    vit = commit_layers(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64), 64)
    assert vit.kind == "isotropic"
    assert vit.region_layer_map == {"V1": "blocks.1", "V2": "blocks.3", "V4": "blocks.5", "IT": "blocks.8"}
    with pytest.raises(ValueError, match="channels-last"):  # TinyViT's stride-16 blocks are (N, H, W, C)
        commit_layers(timm.create_model("tiny_vit_5m_224", pretrained=False), 224)


def test_behavioral_readout_known_answers():
    """The pre-logits features upstream's timm plugins read: pooled features, not an early block."""
    from harmonized_models.layer_rules import behavioral_readout_layer
    cases = {("resnet18", 64): "global_pool", ("vit_tiny_patch16_224", 64): "fc_norm",
             ("convnext_atto", 64): "head.norm", ("mobilenetv3_small_050", 64): "act2",
             ("deit_tiny_distilled_patch16_224", 64): "head_drop", ("levit_128s", 224): "stages"}
    for (name, size), expected in cases.items():
        kwargs = {"img_size": size} if name.startswith(("vit", "deit")) else {}
        torch.manual_seed(0)
        assert behavioral_readout_layer(timm.create_model(name, pretrained=False, **kwargs), size) == expected, name
    lite = baselines.build_efficientnet_lite(0, pretrained=False)
    assert behavioral_readout_layer(lite, 64) == baselines.LITE_READOUT_LAYER == "_avg_pooling"
    # ModelCommitment's behavioural tasks read it (not layers[-1], which is V1's layer here)
    model = harmonized_models.load_model("resnet18.tv_in1k", pretrained=False, device="cpu")
    probabilities = model.behavior_model.mapping[BrainModel.Task.probabilities]
    odd_one_out = model.behavior_model.mapping[BrainModel.Task.odd_one_out]
    assert probabilities.readout == ["global_pool"] and model.layers[-1] != "global_pool"
    assert odd_one_out.readout == ["global_pool"]


def test_unknown_identifier_suggests_close_names():
    with pytest.raises(registry.UnknownModelError, match="did you mean.*resnet50.a1_in1k"):
        harmonized_models.get_entry("resnet50.a1_in1")
    with pytest.raises(KeyError):
        harmonized_models.load_model("no_such_model_at_all_xyz")


def test_weights_hash_is_deterministic_identity():
    assert harmonized_models.weights_hash("resnet50.a1_in1k") == "timm:resnet50.a1_in1k"
    assert harmonized_models.weights_hash("efficientnet_lite0") == f"sha256:{baselines.LITE[0]['sha256']}"
    assert harmonized_models.weights_hash("resnet50.a1_in1k") != harmonized_models.weights_hash("resnet50.tv_in1k")


def test_list_models_by_category(entries):
    robust = harmonized_models.list_models("Robust")
    assert robust and all(e.category == "Robust" for e in robust)
    assert {e.identifier for e in robust} >= {"inception_v3.tf_adv_in1k", "inception_resnet_v2.tf_ens_adv_in1k"}
    with pytest.raises(ValueError, match="unknown category"):
        harmonized_models.list_models("Robustness")


# --- load_model -----------------------------------------------------------------------------------------------------
def test_load_model_commits_explicit_layers_and_stored_maps(natural_images):
    model = harmonized_models.load_model("resnet18.tv_in1k", pretrained=False, device="cpu")
    assert isinstance(model, ModelCommitment) and model.identifier == "resnet18.tv_in1k"
    assert model.layer_model.region_layer_map["IT"] == "layer3.1"
    model.start_recording("IT", [(70, 170)])
    responses = model.look_at(natural_images)
    assert set(responses["layer"].values) == {"layer3.1"} and set(responses["region"].values) == {"IT"}
    assert responses.sizes["neuroid"] == 256 * 14 * 14
    # a map stored by `brainscore commit-layers` wins over the rule
    path = store_region_layer_map("resnet18.tv_in1k", {"V1": "layer1", "V2": "layer2", "V4": "layer2",
                                                       "IT": "layer4.0"}, benchmark="test")
    try:
        assert path == region_layer_map_path("resnet18.tv_in1k")
        stored = harmonized_models.load_model("resnet18.tv_in1k", pretrained=False, device="cpu")
        assert stored.layer_model.region_layer_map["IT"] == "layer4.0"
    finally:
        path.unlink()


def test_local_checkpoint_folder(tmp_path, natural_images):
    from harmonized_models.harmonizer.checkpoint import save_final
    torch.manual_seed(1)
    network = timm.create_model("resnet10t", pretrained=False, num_classes=1000).eval()
    folder = save_final(network, tmp_path / "final", architecture="resnet10t", num_classes=1000, image_size=96,
                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), top1=0.41, it_layer="layer3")
    identifier = f"harmonized:{folder}"
    entry = harmonized_models.get_entry(identifier)
    assert entry.category == "Harmonized" and entry.harmonized and entry.top1 == 0.41
    assert entry.region_layer_map["IT"] == "layer3" and entry.twin == "resnet10t"
    from benchmarks_it_maps.home import sha256_file
    assert harmonized_models.weights_hash(identifier) == f"sha256:{sha256_file(folder / 'model.safetensors')}"
    model = harmonized_models.load_model(identifier, device="cpu")
    model.start_task(BrainModel.Task.label, "imagenet")
    labels = model.look_at(natural_images)
    # the loaded weights are the saved ones: same predictions as the original network
    from harmonized_models.preprocessing import Preprocessing
    x = torch.stack([Preprocessing(image_size=96).load(natural_images.get_stimulus(s))
                     for s in natural_images["stimulus_id"].values])
    with torch.inference_mode():
        expected = network(x).argmax(1).tolist()
    assert list(labels["logit"].values) == expected
    # bad input: one clear error naming the file
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "it_layer": "layer9"}))
    with pytest.raises(ValueError, match=r"model\.json: it_layer 'layer9'"):
        harmonized_models.get_entry(identifier)
    shutil.rmtree(folder)
    with pytest.raises(ValueError, match="not a harmonizer checkpoint folder"):
        harmonized_models.get_entry(identifier)


# --- EfficientNet-Lite (offline real weights) -----------------------------------------------------------------------
def test_efficientnet_lite0_label_task_with_real_weights(natural_images):
    model = harmonized_models.load_model("efficientnet_lite0", device="cpu")
    model.start_task(BrainModel.Task.label, "imagenet")
    labels = model.look_at(natural_images)
    predicted = dict(zip(labels["photo"].values, labels["logit"].values))
    assert predicted["chelsea"] in (281, 282, 285)  # tabby / tiger cat / Egyptian cat
    assert predicted["coffee"] in (967, 968)  # espresso / cup
    logits = model.activations_model(natural_images, layers=["logits"])
    assert logits.sizes["neuroid"] == 1000


def test_efficientnet_lite_refuses_a_corrupted_weights_file(tmp_path, monkeypatch):
    bad = tmp_path / "efficientnet-lite0.pth"
    shutil.copy(baselines.lite_weights_path(0), bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 16)
    monkeypatch.setattr(baselines, "lite_weights_path", lambda version: str(bad))
    with pytest.raises(ValueError, match=r"sha256 .* does not match"):
        baselines.build_efficientnet_lite(0, pretrained=True)


def test_efficientnet_lite0_scores_on_simulated_twin(sim_small):
    from benchmarks_it_maps import load_benchmark
    model = harmonized_models.load_model("efficientnet_lite0", device="cpu")
    score = load_benchmark("Arcaro2020sim.M2ML-pls")(model)
    assert np.isfinite(float(score)) and np.isfinite(float(score.raw))
    assert -1 <= float(score.raw) <= 1
    assert score.attrs["layer"] == "_blocks.10"


# --- harmonized networks (helper D's specs) plug into the registry --------------------------------------------------
def test_harmonized_entries_and_their_twins_are_registered(entries):
    from harmonized_models.harmonized import HARMONIZED
    by_id = {e.identifier: e for e in entries}
    harmonized = harmonized_models.list_models("Harmonized")
    assert {e.identifier for e in harmonized} == set(HARMONIZED)
    for entry in harmonized:
        assert entry.harmonized and entry.weights_source == HARMONIZED[entry.identifier].url
        assert entry.twin in by_id and not by_id[entry.twin].harmonized, entry.identifier
        assert entry.region_layer_map["IT"] == HARMONIZED[entry.identifier].it_layer


def test_harmonized_weights_hash_uses_the_recorded_download_sha256():
    from harmonized_models import harmonized
    assert harmonized_models.weights_hash("harmonized_resnet50") == harmonized.HARMONIZED["harmonized_resnet50"].url
    path = harmonized.manifest_path()
    assert not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"files": {"resnet50v2_harmonized.h5": {"sha256": "ab" * 32}}, "converted": {}}))
    try:
        assert harmonized_models.weights_hash("harmonized_resnet50") == "sha256:" + "ab" * 32
        assert harmonized_models.weights_hash("harmonized_vgg16").startswith("https://")
    finally:
        path.unlink()


def test_missing_timm_weights_offline_give_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(baselines.WeightsUnavailableError, match=r"resnet18\.a1_in1k: .*huggingface\.co/timm"):
        harmonized_models.get_entry("resnet18.a1_in1k").build(pretrained=True)


def test_cli_list_models(capsys):
    from benchmarks_it_maps.cli import main
    assert main(["list", "models", "--category", "Harmonized"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["model", "category", "top1", "it_layer"]
    harmonized = {e.identifier for e in harmonized_models.list_models("Harmonized")}
    assert {line.split()[0] for line in lines[1:]} == harmonized
    assert main(["list", "models", "--category", "Robustz"]) == 2
    assert "unknown category 'Robustz'" in capsys.readouterr().err


def test_a_locally_committed_map_is_shown_never_silent(sim_small, capsys):
    """A map stored by `brainscore commit-layers` is used by this package's loaders and said so: `list models`
    marks it, `score` prints its path; the plugin folders never read it (tests/test_plugins.py)."""
    from benchmarks_it_maps.cli import main
    entry = harmonized_models.get_entry("efficientnet_lite0")
    local = {**entry.region_layer_map, "IT": "_blocks.9"}
    path = store_region_layer_map("efficientnet_lite0", local, benchmark="test")
    try:
        assert harmonized_models.region_layer_map_with_source("efficientnet_lite0") == \
            (local, f"committed locally: {path}")
        assert main(["list", "models", "--category", "CNN"]) == 0
        out = capsys.readouterr().out
        row = next(line for line in out.splitlines() if line.startswith("efficientnet_lite0 "))
        assert "_blocks.9 *" in row and "committed locally with `brainscore commit-layers`" in out
        assert not any(line.startswith("efficientnet_lite1 ") and "*" in line for line in out.splitlines())
        assert main(["score", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M2ML-pls",
                     "--device", "cpu", "--batch-size", "4", "--no-record"]) == 0
        out = capsys.readouterr().out
        assert f"region_layer_map: committed locally: {path}" in out and "_blocks.9" in out
    finally:
        path.unlink()
    assert harmonized_models.region_layer_map_with_source("efficientnet_lite0")[1] == "registry"


def test_non_spatial_it_layer_is_refused_and_nothing_recorded(sim_small, tmp_path, capsys):
    """Maps protocol + an IT layer without a spatial map (global pooling): one clear error, no score stored."""
    from benchmarks_it_maps.cli import main
    from benchmarks_it_maps.runs.results import ResultsDB
    path = store_region_layer_map("efficientnet_lite0", {"V1": "_blocks.2", "V2": "_blocks.4", "V4": "_blocks.7",
                                                         "IT": "_avg_pooling"})
    db = tmp_path / "results.sqlite"
    try:
        code = main(["score", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M2ML-pls",
                     "--device", "cpu", "--results", str(db)])
    finally:
        path.unlink()
    err = capsys.readouterr().err
    assert code == 2
    assert "layer _avg_pooling) has no spatial structure" in err and "Arcaro2020sim.M2ML-shift_pls" in err
    assert not db.exists() or ResultsDB(db).rows() == []


def test_cli_model_load_errors_are_one_line(sim_small, tmp_path, monkeypatch, capsys):
    """A bad checkpoint folder (score) and timm weights missing offline (commit-layers): exit 2, no traceback."""
    import huggingface_hub.constants
    from benchmarks_it_maps.cli import main
    assert main(["score", "--model", f"harmonized:{tmp_path / 'nope'}", "--benchmark", "Arcaro2020sim.M2ML-pls",
                 "--device", "cpu", "--results", str(tmp_path / "results.sqlite")]) == 2
    assert "not a harmonizer checkpoint folder" in capsys.readouterr().err
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert main(["commit-layers", "--model", "resnet18.a1_in1k", "--benchmark", "Arcaro2020sim.M2ML-pls"]) == 2
    assert "huggingface.co/timm/resnet18.a1_in1k" in capsys.readouterr().err
    assert not region_layer_map_path("resnet18.a1_in1k").exists()
