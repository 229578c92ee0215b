"""Harmonized networks: specs, download-once / convert-once cache (local http.server, never the network),
sha256 and unmapped-tensor refusals with nothing cached, the offline error, and ``brainscore convert-keras``."""
from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import shutil
import threading

import h5py
import numpy as np
import pytest
import torch
from keras_fixtures import fixture_dir

from benchmarks_it_maps.cli import main
from benchmarks_it_maps.home import sha256_file
from harmonized_models import harmonized as hz
from harmonized_models.keras import read_h5
from harmonized_models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

IDENTIFIERS = ("harmonized_vgg16", "harmonized_resnet50", "harmonized_efficientnet_b0", "harmonized_vit_b16",
               "harmonized_levit_128", "harmonized_convnext_tiny", "harmonized_maxvit_tiny")
NAME = "harmonized_efficientnet_b0"  # served from the qubvel EfficientNetB0 fixture (22 MB, fast to convert)


@pytest.fixture(scope="session")
def keras_dir():
    return fixture_dir(["efficientnet_b0_qubvel"])


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(hz.OFFLINE_ENV, raising=False)
    return tmp_path / "home"


class _Server:
    """A local http.server on 127.0.0.1 serving one folder; records the requested paths."""

    def __init__(self, folder):
        self.requests: list[str] = []
        self.folder = folder
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, keras_dir, monkeypatch):
    folder = tmp_path / "bucket"
    (folder / "models").mkdir(parents=True)
    shutil.copy(keras_dir / "efficientnet_b0_qubvel.h5", folder / "models" / hz.HARMONIZED[NAME].filename)
    srv = _Server(folder)
    monkeypatch.setenv(hz.BASE_URL_ENV, srv.url)
    yield srv
    srv.close()


def _logits(net, npz):
    x = torch.from_numpy(np.ascontiguousarray(npz["inputs"].transpose(0, 3, 1, 2)))
    with torch.inference_mode():
        return net(x).numpy()


def test_specs_are_complete():
    assert tuple(hz.HARMONIZED) == IDENTIFIERS
    files = set()
    for name, spec in hz.HARMONIZED.items():
        assert spec.identifier == name and spec.url.startswith(hz.BASE_URL) and spec.filename.endswith(".h5")
        files.add(spec.filename)
        assert 0.6 < spec.top1 < 0.85 and spec.top1_source
        assert spec.preprocessing.mean == IMAGENET_MEAN and spec.preprocessing.std == IMAGENET_STD
        assert spec.preprocessing.image_size == 224
        assert spec.region_layer_map["IT"] == spec.it_layer and spec.it_layer in spec.candidate_layers
        assert spec.twin and callable(spec.builder)
    assert len(files) == 7
    assert hz.HARMONIZED["harmonized_resnet50"].filename == "resnet50v2_harmonized.h5"


@pytest.mark.parametrize("name", IDENTIFIERS[:4])
def test_commitments_follow_the_layer_rule(name):
    """Same rule as the baselines (harmonized_models.layer_rules); the ResNet adds the notebook's layers."""
    from harmonized_models.layer_rules import commit_layers

    spec = hz.HARMONIZED[name]
    net = spec.builder()
    rule = commit_layers(net, 224)
    assert spec.region_layer_map == rule.region_layer_map and spec.it_layer == rule.region_layer_map["IT"]
    assert list(spec.candidate_layers[:len(rule.candidate_layers)]) == rule.candidate_layers
    modules = dict(net.named_modules())
    assert all(layer in modules for layer in spec.candidate_layers)
    it = next(u for u in rule.units if u.name == spec.it_layer)
    assert it.layout == "NCHW" or name == "harmonized_vit_b16"


def test_download_once_convert_once_then_cache(home, server, keras_dir):
    net = hz.load_harmonized_network(NAME)
    ref = np.load(keras_dir / "efficientnet_b0_qubvel.npz")
    y = _logits(net, ref)
    assert np.abs(y - ref["logits"]).max() <= 1e-4 * np.abs(ref["logits"]).max()
    h5_path, out = hz.harmonized_h5_path(NAME), hz.converted_path(NAME)
    assert h5_path.exists() and out.exists() and str(out).startswith(str(home / "weights"))
    manifest = json.loads(hz.manifest_path().read_text())
    assert manifest["files"][h5_path.name]["sha256"] == sha256_file(keras_dir / "efficientnet_b0_qubvel.h5")
    assert manifest["files"][h5_path.name]["url"] == server.url + h5_path.name
    assert manifest["converted"][NAME]["source_sha256"] == manifest["files"][h5_path.name]["sha256"]
    assert server.requests == ["/models/" + h5_path.name]
    mtime = out.stat().st_mtime_ns
    server.close()  # the second load must neither download nor convert
    again = hz.load_harmonized_network(NAME)
    assert out.stat().st_mtime_ns == mtime and len(server.requests) == 1
    np.testing.assert_array_equal(_logits(again, ref), y)
    assert not list(hz.weights_dir().glob("*.partial"))


def test_hand_placed_file_via_file_url(home, keras_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(keras_dir / "efficientnet_b0_qubvel.h5", mirror / hz.HARMONIZED[NAME].filename)
    monkeypatch.setenv(hz.BASE_URL_ENV, mirror.as_uri())
    net = hz.load_harmonized_network(NAME)
    assert isinstance(net, torch.nn.Module) and hz.converted_path(NAME).exists()


def test_wrong_sha256_is_refused_and_nothing_cached(home, server, monkeypatch):
    spec = hz.HARMONIZED[NAME]
    monkeypatch.setitem(hz.HARMONIZED, NAME, dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(hz.HarmonizedWeightsError, match="does not match the expected 0000"):
        hz.load_harmonized_network(NAME)
    assert server.requests  # it did download
    cached = list(hz.weights_dir().iterdir()) if hz.weights_dir().exists() else []
    assert cached == []


def test_cached_file_with_changed_sha256_is_refused(home, server, keras_dir):
    hz.fetch_h5(NAME)
    path = hz.harmonized_h5_path(NAME)
    with h5py.File(path, "r+") as f:  # the file changes after its sha256 was recorded
        f["model_weights/top_bn/top_bn/gamma:0"][0] += 1.0
    with pytest.raises(hz.HarmonizedWeightsError, match="sha256 .* does not match"):
        hz.load_harmonized_network(NAME)
    assert not hz.converted_path(NAME).exists()


def test_unmappable_download_is_refused_and_not_converted(home, server):
    path = server.folder / "models" / hz.HARMONIZED[NAME].filename
    with h5py.File(path, "r+") as f:
        group = f["model_weights/stem_conv"]
        group.create_dataset("stem_conv/extra:0", data=np.ones(3, np.float32))
        group.attrs["weight_names"] = np.array([*map(str, group.attrs["weight_names"]), "stem_conv/extra:0"],
                                               dtype=h5py.string_dtype())
    with pytest.raises(ValueError, match="stem_conv/extra"):
        hz.load_harmonized_network(NAME)
    assert not hz.converted_path(NAME).exists()
    assert NAME not in hz.read_manifest()["converted"]


def test_offline_error_names_url_and_cache_path(home, monkeypatch):
    monkeypatch.setenv(hz.BASE_URL_ENV, "http://127.0.0.1:9/models/")  # discard port: connection refused
    with pytest.raises(hz.HarmonizedWeightsError) as info:
        hz.load_harmonized_network(NAME)
    message = str(info.value)
    assert "http://127.0.0.1:9/models/efficientnetB0_harmonized.h5" in message
    assert str(hz.harmonized_h5_path(NAME)) in message
    monkeypatch.setenv(hz.OFFLINE_ENV, "1")
    monkeypatch.delenv(hz.BASE_URL_ENV)
    with pytest.raises(hz.HarmonizedWeightsError, match="storage.googleapis.com/serrelab/prj_harmonization"):
        hz.load_harmonized_network("harmonized_vit_b16")
    assert not hz.weights_dir().exists() or not any(p.suffix in (".h5", ".safetensors")
                                                    for p in hz.weights_dir().iterdir())
    with pytest.raises(KeyError, match="did you mean harmonized_vgg16"):
        hz.load_harmonized_network("harmonized_vgg19")


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_convert_keras(keras_dir, tmp_path, capsys):
    out = tmp_path / "eff.safetensors"
    rc = main(["convert-keras", str(keras_dir / "efficientnet_b0_qubvel.h5"), "--arch", "efficientnet_b0",
               "--out", str(out)])
    assert rc == 0 and out.exists()
    report = json.loads(capsys.readouterr().out)
    assert report["arch"] == "efficientnet_b0" and report["keras_model"] == "efficientnet-b0"
    assert report["tensors_in_file"] == read_h5(keras_dir / "efficientnet_b0_qubvel.h5").n_tensors
    rc = main(["convert-keras", str(keras_dir / "efficientnet_b0_qubvel.h5"), "--arch", "vit_b16",
               "--out", str(tmp_path / "vit.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a vit-keras ViT" in err and "nothing written" in err
    assert not (tmp_path / "vit.safetensors").exists()
    rc = main(["convert-keras", str(tmp_path / "missing.h5"), "--arch", "vgg16", "--out", str(out)])
    assert rc == 2 and "no such file" in capsys.readouterr().err
    rc = main(["convert-keras", str(keras_dir / "efficientnet_b0_qubvel.h5"), "--arch", "vgg61", "--out", str(out)])
    assert rc == 2 and "unknown Keras arch" in capsys.readouterr().err
