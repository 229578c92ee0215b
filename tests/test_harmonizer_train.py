"""`brainscore harmonize train|evaluate` end to end on tiny real data (timm test_resnet, random weights, CPU)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from benchmarks_it_maps.cli import main
from harmonized_models.harmonizer.checkpoint import load_final
from harmonized_models.harmonizer.data import CLICKME, IMAGENET, MixedBatchSampler
import harmonizer_fixtures

single_thread = harmonizer_fixtures.single_thread  # autouse: one torch thread in this module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("harmonize-data")
    rng = np.random.default_rng(0)
    imagenet = root / "imagenet"
    for c, wnid in enumerate(("n01", "n02", "n03")):
        (imagenet / wnid).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
            img[..., c] = 255  # class evidence: one saturated channel
            Image.fromarray(img).save(imagenet / wnid / f"{i}.png")
    clickme = root / "clickme"
    (clickme / "images").mkdir(parents=True)
    (clickme / "maps").mkdir()
    rows = ["image,label"]
    for i in range(8):
        label = i % 3
        img = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        img[..., label] = 255
        Image.fromarray(img).save(clickme / "images" / f"c{i}.png")
        yy, xx = np.mgrid[0:48, 0:48]
        np.save(clickme / "maps" / f"c{i}.npy", np.exp(-((yy - 8 - 4 * i) ** 2 + (xx - 24) ** 2) / 50.0))
        rows.append(f"c{i}.png,{label}")
    (clickme / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"imagenet": imagenet, "clickme": clickme}


def _train_args(data, out, *extra):
    return ["harmonize", "train", "--model", "test_resnet", "--imagenet", str(data["imagenet"]),
            "--clickme", str(data["clickme"]), "--epochs", "2", "--out", str(out), "--num-classes", "3",
            "--image-size", "32", "--batch-size", "4", "--steps-per-epoch", "3", "--workers", "0", "--amp", "off",
            "--log-every", "1", "--lr", "0.05", "--no-progress", "--device", "cpu", *extra]


def _steps(log_file):
    return [json.loads(line) for line in log_file.read_text().splitlines() if '"step"' in line]


def test_sampler_mixes_sources_and_resumes_exactly():
    sampler = MixedBatchSampler(10, 7, batch_size=4, clickme_fraction=0.5, seed=3, steps_per_epoch=5)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == 5
    for batch in batches:
        assert [k[0] for k in batch] == [IMAGENET, IMAGENET, CLICKME, CLICKME]
    clickme = [k[1] for b in batches for k in b if k[0] == CLICKME]
    assert sorted(clickme[:7]) == list(range(7))  # one full pass before any repeat
    sampler.set_start(2)
    assert list(sampler) == batches[2:]
    sampler.set_epoch(2)
    sampler.set_start(0)
    assert list(sampler) != batches
    ranks = [MixedBatchSampler(20, 7, 4, 0.25, seed=3, world_size=2, rank=r, steps_per_epoch=2) for r in (0, 1)]
    keys = [set(k[:2] for b in s for k in b) for s in ranks]
    assert not keys[0] & keys[1]  # ranks draw different samples
    assert MixedBatchSampler(10, 8, 4, 0.5).steps == 4  # default epoch: one pass over ClickMe


def test_train_resume_is_exact_and_final_checkpoint_loads(data, tmp_path, capsys):
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(_train_args(data, full, "--imagenet-val", str(data["imagenet"]))) == 0
    # the same run, interrupted mid-epoch 2 (after 4 of 6 steps) and resumed
    assert main(_train_args(data, split, "--stop-after-steps", "4")) == 0
    assert (split / "checkpoints" / "interrupted.pt").is_file() and not (split / "final").exists()
    capsys.readouterr()
    assert main(_train_args(data, split)) == 2  # refuses to overwrite a run without --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main(_train_args(data, split, "--resume", "--lr", "0.1")) == 2  # other settings: refused
    assert "lr" in capsys.readouterr().err
    assert main(_train_args(data, split, "--resume")) == 0
    a, b = load_file(full / "final" / "model.safetensors"), load_file(split / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    initial = torch.load(full / "checkpoints" / "epoch_001.pt", weights_only=True)["model"]  # no pickled objects
    assert any(not torch.equal(initial[k], a[k]) for k in a)  # training changed the weights
    # every loss term logged once per step, identical in both runs
    log_full, log_split = _steps(full / "log.jsonl"), _steps(split / "log.jsonl")
    assert [r["global_step"] for r in log_split] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(log_full, log_split):
        for key in ("ce", "harmonization", "weights", "loss", "lr"):
            assert x[key] == y[key]
        assert x["harmonization"] > 0 and x["ce"] > 0
    assert log_full[-1]["lr"] < log_full[0]["lr"]  # cosine decay
    assert (full / "loss.png").stat().st_size > 0

    meta = json.loads((full / "final" / "model.json").read_text())
    assert {"architecture", "num_classes", "image_size", "mean", "std", "top1", "it_layer"} <= set(meta)
    assert meta["architecture"] == "test_resnet" and meta["num_classes"] == 3 and meta["image_size"] == 32
    assert 0.0 <= meta["top1"] <= 1.0
    network, _ = load_final(full / "final")
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, a[key], rtol=0, atol=0)

    import harmonized_models
    commitment = harmonized_models.load_model(f"harmonized:{full / 'final'}", device="cpu")
    assert commitment.identifier == f"harmonized:{(full / 'final').resolve()}"

    # evaluate the trained checkpoint: ClickMe alignment + top-1, files written
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["harmonize", "evaluate", "--model", f"harmonized:{full / 'final'}", "--clickme",
                 str(data["clickme"]), "--imagenet-val", str(data["imagenet"]), "--batch-size", "4",
                 "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 8 and summary["top1"] == pytest.approx(meta["top1"])
    assert summary["alignment"] == pytest.approx(summary["spearman"] / 0.6575315343478081)
    assert (out / "examples.png").stat().st_size > 0
    assert len(json.loads((out / "scores.json").read_text())["per_image"]["spearman"]) == 8


def test_train_under_bf16_autocast(data, tmp_path):
    """--amp bf16 (CPU autocast here): the forward runs in bf16, every logged loss term stays finite float32."""
    runs = {}
    for amp in ("off", "bf16"):
        args = _train_args(data, tmp_path / amp)
        args[args.index("--amp") + 1] = amp
        args[args.index("--epochs") + 1] = "1"
        assert main(args) == 0
        runs[amp] = _steps(tmp_path / amp / "log.jsonl")
    assert len(runs["bf16"]) == 3
    for record in runs["bf16"]:
        assert all(np.isfinite(record[k]) for k in ("loss", "ce", "harmonization", "weights", "grad_norm"))
    first_off, first_bf16 = runs["off"][0], runs["bf16"][0]  # the same weights and batch: close, not equal
    assert first_bf16["ce"] == pytest.approx(first_off["ce"], rel=0.02)
    assert first_bf16["ce"] != first_off["ce"]  # autocast was really on (bf16 logits)
    assert first_bf16["weights"] == first_off["weights"]  # L2 term of the same float32 weights


def test_train_errors_are_one_line(data, tmp_path, capsys, monkeypatch):
    args = _train_args(data, tmp_path / "x")
    args[args.index("--clickme") + 1] = str(tmp_path / "missing")
    assert main(args) == 2
    assert "missing: does not exist" in capsys.readouterr().err
    args = _train_args(data, tmp_path / "y")
    args[args.index("--num-classes") + 1] = "2"
    assert main(args) == 2
    assert "--num-classes 3" in capsys.readouterr().err
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for model, message in (("no_such_net", "Unknown model"), ("test_resnet", "huggingface.co/timm/test_resnet")):
        args = _train_args(data, tmp_path / model, "--pretrained")
        args[args.index("--model") + 1] = model
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--model '{model}'" in err[0] and message in err[0], err
        assert not (tmp_path / model / "checkpoints").exists()


class _Payload:
    """Unpickling this runs a shell command that creates a marker file (what an attacker's checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_resume_never_executes_a_crafted_checkpoint(data, tmp_path, capsys):
    """A checkpoint with a code-running pickle is refused (weights_only) and one pointing outside checkpoints/ is
    never read: one line, exit 2, no marker file, no training."""
    out = tmp_path / "run"
    assert main(_train_args(data, out, "--stop-after-steps", "1")) == 0
    ckpt = out / "checkpoints"
    real = torch.load(ckpt / "interrupted.pt", weights_only=True)
    marker = tmp_path / "PWNED"
    torch.save({**real, "model": _Payload(marker)}, ckpt / "interrupted.pt")
    capsys.readouterr()
    assert main(_train_args(data, out, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted.pt: refused" in err[0], err
    assert not marker.exists()
    outside = tmp_path / "elsewhere.pt"
    torch.save({**real, "model": _Payload(marker)}, outside)
    for name in (str(outside), "../../elsewhere.pt", "sub/x.pt"):
        (ckpt / "latest.json").write_text(json.dumps({"file": name}))
        assert main(_train_args(data, out, "--resume")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "field 'file' must name a .pt file inside" in err[0], err
    assert not marker.exists()
    assert not (out / "final").exists() and len(_steps(out / "log.jsonl")) == 1


def test_torchrun_ddp_matches_single_process(data, tmp_path):
    """2 processes x 2 samples (DDP, gloo) = 1 process x 4 samples, for a model without batch coupling (ViT)."""
    import os
    import subprocess
    import sys

    def args(out, batch):
        a = _train_args(data, out)
        a[a.index("--model") + 1] = "test_vit"
        a[a.index("--batch-size") + 1] = str(batch)
        return a

    assert main(args(tmp_path / "single", 4)) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "benchmarks_it_maps", *args(tmp_path / "ddp", 2)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = load_file(tmp_path / "single" / "final" / "model.safetensors")
    ddp = load_file(tmp_path / "ddp" / "final" / "model.safetensors")
    initial = torch.load(tmp_path / "single" / "checkpoints" / "epoch_001.pt", weights_only=False)["model"]
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.equal(initial[k], single[k]) for k in single)
    log_single, log_ddp = _steps(tmp_path / "single" / "log.jsonl"), _steps(tmp_path / "ddp" / "log.jsonl")
    for x, y in zip(log_single, log_ddp):  # logged terms are averaged over ranks
        assert y["ce"] == pytest.approx(x["ce"], rel=1e-4)
        assert y["harmonization"] == pytest.approx(x["harmonization"], rel=1e-3)
    assert json.loads((tmp_path / "ddp" / "final" / "model.json").read_text())["model_kwargs"] == {"img_size": 32}
