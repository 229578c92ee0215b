"""TorchActivationsModel: same assemblies as brainscore-vision's PytorchWrapper, batching/OOM back-off, autocast."""
from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from brainscore_core.supported_data_standards.brainio.assemblies import walk_coords
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper, load_preprocess_images

from harmonized_models.activations import TorchActivationsModel, resolve_autocast, resolve_device
from harmonized_models.commitment import model_from_network
from harmonized_models.preprocessing import Preprocessing

SIZE = 64


def _network(name: str = "resnet18", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """Seven small images of different sizes and modes (RGB, grey, RGBA, palette)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    paths = []
    for i in range(7):
        h, w = 40 + 3 * i, 56 - 2 * i
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = ((np.stack([xx * 4, yy * 5, (xx + yy) * 3], -1) + rng.randint(0, 60, (h, w, 3))) % 256)
        image = Image.fromarray(pixels.astype(np.uint8))
        image = {4: image.convert("L"), 5: image.convert("RGBA"), 6: image.convert("P")}.get(i, image)
        path = folder / f"img{i}.png"
        image.save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def stimulus_set(images) -> StimulusSet:
    stimuli = StimulusSet([{"stimulus_id": f"s{i}", "category": f"c{i % 2}", "number": i}
                           for i in range(len(images))])
    stimuli.stimulus_paths = {f"s{i}": path for i, path in enumerate(images)}
    stimuli.identifier = "test-activations-images"
    return stimuli


def _coords(assembly) -> dict:
    return {name: (dims, values) for name, dims, values in walk_coords(assembly)}


def assert_same_assembly(ours, reference) -> None:
    """Same dims, same coordinates (names, dims, dtypes, values), same values (float tolerance)."""
    assert ours.dims == reference.dims
    ours_coords, ref_coords = _coords(ours), _coords(reference)
    assert sorted(ours_coords) == sorted(ref_coords)
    for name, (dims, values) in ref_coords.items():
        our_dims, our_values = ours_coords[name]
        assert our_dims == dims, name
        assert our_values.dtype == values.dtype, (name, our_values.dtype, values.dtype)
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(our_values, values, err_msg=name)
        else:
            assert list(our_values) == list(values), name
    np.testing.assert_allclose(ours.values, reference.values, rtol=1e-4, atol=1e-5)


def test_conv_and_fc_layers_match_pytorch_wrapper(stimulus_set):
    network = _network()
    reference = PytorchWrapper(network, functools.partial(load_preprocess_images, image_size=SIZE),
                               identifier="resnet18-test")
    ours = TorchActivationsModel(network, "resnet18-test", SIZE, batch_size=3, device="cpu")
    layers = ["layer1", "layer3.0", "fc", "logits"]
    expected = reference(stimulus_set, layers=layers)
    actual = ours(stimulus_set, layers=layers)
    assert_same_assembly(actual, expected)
    conv = actual.sel(layer="layer1")  # channel-major, then row (channel_x), then column (channel_y)
    assert list(conv["channel_x"].values[:3]) == [0, 0, 0] and list(conv["channel_y"].values[:3]) == [0, 1, 2]
    assert actual["neuroid_id"].values[0] == "resnet18-test.layer1.0"
    assert list(actual["category"].values) == list(stimulus_set["category"].values)


def test_token_layers_match_pytorch_wrapper(stimulus_set):
    network = _network("vit_tiny_patch16_224", img_size=32)
    reference = PytorchWrapper(network, functools.partial(load_preprocess_images, image_size=32),
                               identifier="vit-test")
    ours = TorchActivationsModel(network, "vit-test", 32, device="cpu")
    expected = reference(stimulus_set, layers=["blocks.0", "blocks.11"])
    actual = ours(stimulus_set, layers=["blocks.0", "blocks.11"])
    assert_same_assembly(actual, expected)
    assert set(actual["channel"].values) == set(range(5))  # class token + 2 x 2 patches
    assert "embedding" in _coords(actual)


def test_batch_size_and_duplicates_do_not_change_results(images):
    network = _network()
    one = TorchActivationsModel(network, "r18", SIZE, batch_size=1, device="cpu")(images, layers=["layer2"])
    auto = TorchActivationsModel(network, "r18", SIZE, device="cpu")
    np.testing.assert_allclose(auto(images, layers=["layer2"]).values, one.values, rtol=1e-5, atol=1e-6)
    doubled = auto(images + images[:2], layers=["layer2"])
    assert doubled.shape[0] == len(images) + 2
    np.testing.assert_allclose(doubled.values[-2:], one.values[:2], rtol=1e-5, atol=1e-6)
    # early exit (stopping after the last hooked layer) changed nothing: the second call used it
    assert auto._single_call_layers[("layer2",)] is True
    plain = TorchActivationsModel(network, "r18", SIZE, device="cpu", channels_last=False, early_exit=False)
    np.testing.assert_allclose(plain(images, layers=["layer2"]).values, one.values, rtol=1e-5, atol=1e-6)


class _Reused(torch.nn.Module):
    """One convolution applied twice per pass (shared weights): reading it must give its second call's output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.block, self.tail = (torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.Conv2d(4, 4, 3, padding=1),
                                            torch.nn.Conv2d(4, 2, 3))

    def forward(self, x):
        return self.tail(self.block(torch.relu(self.block(torch.relu(self.stem(x))))))


class _NoSmallBatches(_Reused):
    """Fails on batches of fewer than three images (as a model that squeezes its batch dimension would)."""

    def forward(self, x):
        if len(x) < 3:
            raise RuntimeError("batch too small")
        return super().forward(x)


class _PerImage(_Reused):
    """Runs its block image by image."""

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.tail(torch.cat([self.block(x[i:i + 1]) for i in range(len(x))]))


def _inputs(paths: list[str]) -> torch.Tensor:
    """The images as the extractor preprocesses them (uint8 decode and resize, then normalisation)."""
    preprocessing = Preprocessing.coerce(SIZE)
    return preprocessing.normalize(torch.stack([preprocessing.load_uint8(p) for p in paths]))


def _second_block_call(network: _Reused, paths: list[str]) -> np.ndarray:
    """The output of ``network.block``'s second call on the images, computed by hand."""
    with torch.inference_mode():
        x = torch.relu(network.stem(_inputs(paths)))
        return network.block(torch.relu(network.block(x))).numpy()


def _images_through(module: torch.nn.Module, seen: list) -> None:
    module.register_forward_hook(lambda _m, _i, output: seen.append(len(output)))


def test_the_first_batch_stops_after_the_hooked_layer(images):
    """Whether the pass may stop after the last hooked layer is learnt from two images through the whole network,
    not from the whole first batch: the layers past it see those two images only, and the outputs are those of
    the whole pass."""
    network = _network()
    full = TorchActivationsModel(network, "r18", SIZE, device="cpu", early_exit=False).run(images, ["layer2"])
    seen: list[int] = []
    _images_through(network.layer4, seen)
    model = TorchActivationsModel(network, "r18", SIZE, device="cpu")
    first = model.run(images, ["layer2"])
    assert seen == [2] and model._single_call_layers[("layer2",)] is True
    np.testing.assert_array_equal(model.run(images, ["layer2"])["layer2"], first["layer2"])
    assert seen == [2]
    np.testing.assert_allclose(first["layer2"], full["layer2"], rtol=1e-5, atol=1e-6)


def test_a_layer_called_twice_is_read_at_its_last_call(images):
    network = _Reused().eval()
    expected = _second_block_call(network, images)
    model = TorchActivationsModel(network, "reused", SIZE, device="cpu")
    for _ in range(2):
        np.testing.assert_allclose(model.run(images, ["block"])["block"], expected, rtol=1e-5, atol=1e-6)
    assert model._single_call_layers[("block",)] is False


def test_a_model_that_cannot_take_the_probe_still_runs(images):
    network = _NoSmallBatches().eval()
    expected = _second_block_call(network, images)
    model = TorchActivationsModel(network, "no-small", SIZE, device="cpu")
    np.testing.assert_allclose(model.run(images, ["block"])["block"], expected, rtol=1e-5, atol=1e-6)
    assert model._single_call_layers[("block",)] is False  # decided by the whole first batch


def test_a_layer_run_image_by_image_is_refused(images):
    model = TorchActivationsModel(_PerImage().eval(), "per-image", SIZE, device="cpu")
    with pytest.raises(ValueError, match=r"layer 'block' of 'per-image' returns shape \(1, 4, 16, 16\) for a "
                                         r"batch of 7 images: its first dimension is not the images"):
        model.run(images, ["block"])
    stem = model.run(images, ["stem"])["stem"]  # a layer that sees the whole batch still reads
    assert stem.shape == (7, 4, 16, 16)


def test_out_of_memory_back_off(images, caplog):
    network = _network()
    reference = TorchActivationsModel(network, "r18", SIZE, batch_size=1, device="cpu")(images, layers=["layer3"])
    model = TorchActivationsModel(network, "r18", SIZE, device="cpu", simulated_memory_limit=3)
    with caplog.at_level(logging.WARNING, logger="harmonized_models.activations"):
        result = model(images, layers=["layer3"])
    assert model.last_batch_size == 3  # 7 images: 7 fails, halved to 3
    np.testing.assert_allclose(result.values, reference.values, rtol=1e-5, atol=1e-6)
    assert "out of memory at batch size 7; retrying with 3" in caplog.text


def test_max_batch_size_caps_the_automatic_choice(images):
    model = TorchActivationsModel(_network(), "r18", SIZE, device="cpu", max_batch_size=4)
    model(images, layers=["layer1"])
    assert model.last_batch_size == 4


def test_non_memory_errors_are_not_retried(images):
    model = TorchActivationsModel(_network(), "r18", SIZE, device="cpu")
    with pytest.raises(KeyError, match="no layer 'layer9'.*close names"):
        model(images, layers=["layer9"])


def test_device_and_autocast_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_autocast(None, cpu) is None and resolve_autocast(None, cuda) is torch.bfloat16
    assert resolve_autocast(False, cuda) is None and resolve_autocast("fp16", cpu) is torch.float16
    with pytest.raises(ValueError, match="autocast"):
        resolve_autocast("int8", cpu)
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="cubic")


def test_autocast_changes_a_benchmark_score_by_less_than_0_005(sim_small):
    from benchmarks_it_maps import load_benchmark
    from benchmarks_it_maps.data.simulate import build_generator_network
    sidecar = sim_small["sidecar"]
    generator = sidecar["generator"]
    preprocessing = Preprocessing(image_size=generator["image_size"], mean=generator["mean"], std=generator["std"])
    scores = {}
    for autocast in (False, "bf16"):
        model = model_from_network(build_generator_network(sidecar), f"generator-{autocast}", preprocessing,
                                   generator["layer"], device="cpu", autocast=autocast)
        benchmark = load_benchmark("Arcaro2020sim.M2ML-pls")
        scores[autocast] = float(benchmark(model).raw)
    assert np.isfinite(scores[False]) and scores[False] > 0.3  # the generating network predicts its own data
    assert abs(scores["bf16"] - scores[False]) < 0.005
