"""ClickMe alignment metrics (harmonized_models.harmonizer.evaluate) on hand-computable maps and known-truth models;
`brainscore harmonize evaluate` without an ImageNet folder and its errors (with one is in test_harmonizer_train)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr
from torch import nn

from benchmarks_it_maps.cli import main
from harmonized_models.harmonizer.clickme import ClickMeDataset, open_clickme
from harmonized_models.harmonizer.evaluate import (HUMAN_SPEARMAN_CEILING, alignment_scores, clickme_alignment,
                                                   dice_per_map, evaluation_saliency, iou_per_map, spearman_per_map)


def test_dice_and_iou_by_hand():
    # 10x10 maps with distinct values: the top 10 % are exactly 10 pixels; 5 of them shared
    a = np.arange(100, dtype=np.float64).reshape(1, 10, 10)  # top: pixels 90..99
    b = np.zeros(100)
    b[[95, 96, 97, 98, 99, 0, 1, 2, 3, 4]] = np.arange(10) + 100  # top: 95..99 and 0..4
    b[5:95] = np.arange(90) * 0.5
    b = b.reshape(1, 10, 10)
    assert dice_per_map(a, b)[0] == pytest.approx(2 * 5 / (10 + 10))
    assert iou_per_map(a, b)[0] == pytest.approx(5 / 15)
    assert dice_per_map(a, a)[0] == pytest.approx(1.0) and iou_per_map(a, a)[0] == pytest.approx(1.0)


def test_spearman_matches_scipy_and_flags_constant_maps():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 6, 5))
    b = np.round(rng.normal(size=(4, 6, 5)), 1)  # ties
    got = spearman_per_map(a, b)
    want = [spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    b[2] = 1.0
    scores = alignment_scores(a, b)
    assert np.isnan(spearman_per_map(a, b)[2])
    assert scores["n_undefined"] == 1 and scores["n"] == 4
    assert scores["spearman"] == pytest.approx(np.mean([want[0], want[1], want[3]]))
    perfect = alignment_scores(a, 3 * a + 1)
    assert perfect["spearman"] == pytest.approx(1.0)
    assert perfect["alignment"] == pytest.approx(1 / HUMAN_SPEARMAN_CEILING)


class Linear(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight)  # [classes, 3, H, W]

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.weight)


def test_evaluation_saliency_is_channel_max_of_absolute_gradient():
    w = torch.randn(2, 3, 5, 5)
    sal = evaluation_saliency(Linear(w), torch.randn(3, 3, 5, 5), torch.tensor([1, 0, 1]))
    torch.testing.assert_close(sal[0], w[1].abs().amax(0))
    torch.testing.assert_close(sal[1], w[0].abs().amax(0))


def clickme_folder(root, n=4, size=16):
    """A ClickMe folder of ``n`` random images whose human maps are all the same blob; returns the blob."""
    (root / "images").mkdir(parents=True)
    (root / "maps").mkdir()
    yy, xx = np.mgrid[0:size, 0:size]
    blob = np.exp(-((yy - 5) ** 2 + (xx - 10) ** 2) / 8.0).astype(np.float32)
    rng = np.random.default_rng(1)
    rows = ["image,label"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        np.save(root / "maps" / f"{i}.npy", blob)
        rows.append(f"{i}.png,{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return blob


def test_alignment_ranks_models_by_saliency(tmp_path):
    """A model whose input gradient is the human map scores ~1/ceiling; one looking elsewhere scores lower."""
    blob = clickme_folder(tmp_path)
    dataset = ClickMeDataset(open_clickme(tmp_path), image_size=16, map_preprocessing="none")
    aligned = torch.from_numpy(blob).expand(2, 3, 16, 16).clone()
    elsewhere = torch.from_numpy(blob[::-1, ::-1].copy()).expand(2, 3, 16, 16).clone()
    good = clickme_alignment(Linear(aligned), dataset, batch_size=2, device="cpu", progress=False)
    bad = clickme_alignment(Linear(elsewhere), dataset, batch_size=2, device="cpu", progress=False)
    assert good["spearman"] == pytest.approx(1.0, abs=1e-6)
    assert good["alignment"] == pytest.approx(1 / HUMAN_SPEARMAN_CEILING, abs=1e-5)
    assert good["dice"] == pytest.approx(1.0) and good["iou"] == pytest.approx(1.0)
    assert bad["spearman"] < 0.2 and bad["dice"] < 0.1


def test_evaluate_cli_without_imagenet_and_its_errors(tmp_path, capsys, monkeypatch):
    clickme_folder(tmp_path / "clickme")
    common = ["--clickme", str(tmp_path / "clickme"), "--map-preprocessing", "none", "--batch-size", "2",
              "--device", "cpu", "--no-progress"]
    assert main(["harmonize", "evaluate", "--model", "test_resnet", "--no-pretrained", *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "top1" not in summary and summary["n"] == 4 and summary["n_undefined"] == 0
    assert summary["alignment"] == pytest.approx(summary["spearman"] / HUMAN_SPEARMAN_CEILING)
    assert -1 <= summary["spearman"] <= 1 and 0 <= summary["iou"] <= summary["dice"] <= 1
    # unknown names and unobtainable pretrained weights: one line each, exit 2
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for model, message in (("no_such_net", "unknown model 'no_such_net'"),
                           ("resnet18.a1_in1k", "huggingface.co/timm/resnet18.a1_in1k"),  # registered baseline
                           ("test_resnet", "huggingface.co/timm/test_resnet")):  # plain timm name
        assert main(["harmonize", "evaluate", "--model", model, *common]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
