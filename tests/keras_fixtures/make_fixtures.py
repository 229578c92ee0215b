"""Build random-weight Keras ``.h5`` fixtures and their reference logits (TensorFlow 2.15 / tf.keras 2.15).

Nine fixtures: the eight of KERAS_NOTES.md plus qubvel's EfficientNetB0 (``efficientnet`` 1.1.1).

Each fixture is the Keras architecture of one released harmonized model (PAPER_NOTES section 5), built with random
weights, with EVERY constant tensor (BN statistics, biases, betas, gammas, layer scales, position tables, class
tokens, Normalization mean/variance) replaced by random values so that a converter bug cannot hide behind an
identity parameter, then saved as a legacy full-model ``.h5`` (``model.save(path, save_format="h5")``) like the
released files.  The file is reloaded and the reference **pre-softmax** logits on fixed random images are taken
from the reloaded model (the last layer's activation is switched to linear), written next to it as ``.npz``.

Outputs in ``--out`` for each arch NAME: ``NAME.h5`` and ``NAME.npz`` with ``inputs`` (N, H, W, 3 float32, NHWC,
exactly what was fed to Keras), ``logits`` (N, classes float32), ``input_range`` ([lo, hi]).  ``manifest.json``
collects per-arch metadata (seed, TF version, file size).  Everything is seeded from the arch name: reruns give the
same logits.

Usage::

    python tests/keras_fixtures/make_fixtures.py --out /tmp/fx                  # all nine
    python tests/keras_fixtures/make_fixtures.py --out /tmp/fx --arch vgg16 --arch vit_b16

Needs the ``[keras]`` extra plus ``pip install --no-deps keras-cv-attention-models==1.4.3`` (KERAS_NOTES.md).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # deterministic CPU kernels
os.environ.setdefault("KECAM_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

N_IMAGES = 2

# arch -> (input range of the reference images, image size)
INPUT_RANGES = {
    "vgg16": (0.0, 255.0),
    "resnet50_caffe": (0.0, 255.0),
    "resnet50_keras": (0.0, 255.0),
    "efficientnet_b0": (0.0, 255.0),
    "efficientnet_b0_qubvel": (-2.5, 2.5),
    "vit_b16": (-1.0, 1.0),
    "levit128": (-1.0, 1.0),
    "convnext_tiny": (-1.0, 1.0),
    "maxvit_tiny": (-1.0, 1.0),
}
ARCHS = tuple(INPUT_RANGES)


def arch_seed(arch: str) -> int:
    """Stable per-arch seed (independent of Python's hash randomisation)."""
    return zlib.crc32(arch.encode()) % (2 ** 31)


# ---------------------------------------------------------------------------------------------- builders
def _build_vgg16(tf, workdir: Path):
    return tf.keras.applications.VGG16(weights=None)


def _build_resnet50_keras(tf, workdir: Path):
    return tf.keras.applications.ResNet50(weights=None)


def _build_resnet50_caffe(tf, workdir: Path):
    """keras_applications 1.0.8's ResNet50 (caffe names res5c_branch2b, add_15) built with tf.keras modules."""
    from keras_applications import resnet50

    return resnet50.ResNet50(weights=None, backend=tf.keras.backend, layers=tf.keras.layers,
                             models=tf.keras.models, utils=tf.keras.utils)


def _build_efficientnet_b0(tf, workdir: Path):
    """The ``weights="imagenet"`` graph (it adds the ``rescaling_1`` layer after ``normalization``).

    ``get_file`` is monkeypatched to return a local weights file holding the random weights of the
    ``weights=None`` graph (same weighted layers in the same order), so nothing is downloaded.
    """
    from keras.src.applications import efficientnet as keras_effnet

    init = tf.keras.applications.EfficientNetB0(weights=None)
    weights_file = workdir / "_efficientnet_b0_init.weights.h5"
    init.save_weights(str(weights_file), save_format="h5")
    del init
    tf.keras.backend.clear_session()  # so the saved graph's auto-names are rescaling, normalization, rescaling_1
    original = keras_effnet.data_utils.get_file
    keras_effnet.data_utils.get_file = lambda *args, **kwargs: str(weights_file)
    try:
        model = tf.keras.applications.EfficientNetB0(weights="imagenet")
    finally:
        keras_effnet.data_utils.get_file = original
        weights_file.unlink(missing_ok=True)
    return model


def _build_efficientnet_b0_qubvel(tf, workdir: Path):
    """qubvel's ``efficientnet`` 1.1.1 EfficientNetB0 (what the Harmonization repo imports to load the released
    file): same block names, 'same' padding instead of ZeroPadding2D, no input rescaling layers, head ``probs``."""
    import efficientnet.tfkeras as efn

    return efn.EfficientNetB0(weights=None)


def _build_vit_b16(tf, workdir: Path):
    from vit_keras import vit

    return vit.vit_b16(image_size=224, pretrained=False, include_top=True, pretrained_top=False, classes=1000)


def _build_levit128(tf, workdir: Path):
    from keras_cv_attention_models import levit

    return levit.LeViT128(pretrained=None)


def _build_convnext_tiny(tf, workdir: Path):
    from keras_cv_attention_models import convnext

    return convnext.ConvNeXtTiny(pretrained=None)


def _build_maxvit_tiny(tf, workdir: Path):
    from keras_cv_attention_models import maxvit

    return maxvit.MaxViT_Tiny(pretrained=None)


BUILDERS: dict[str, Callable] = {
    "vgg16": _build_vgg16,
    "resnet50_caffe": _build_resnet50_caffe,
    "resnet50_keras": _build_resnet50_keras,
    "efficientnet_b0": _build_efficientnet_b0,
    "efficientnet_b0_qubvel": _build_efficientnet_b0_qubvel,
    "vit_b16": _build_vit_b16,
    "levit128": _build_levit128,
    "convnext_tiny": _build_convnext_tiny,
    "maxvit_tiny": _build_maxvit_tiny,
}


# ---------------------------------------------------------------------------------------------- randomising
def randomize_constants(model, rng: np.random.Generator) -> int:
    """Replace every constant float weight tensor by random values; return how many were replaced.

    Constant tensors (all elements equal) are what Keras initialises BN gamma/beta/mean/variance, biases, layer
    scales, position tables and class tokens to.  A constant non-zero tensor (gamma = 1, variance = 1,
    layer scale = 1e-6) becomes U(0.5, 1.5) (positive, so variances stay valid); a zero tensor becomes N(0, 0.2).
    Non-float tensors (Normalization's ``count``) are left alone.  Layers with cached state
    (Normalization) get ``finalize_state()`` afterwards.
    """
    replaced = 0
    for layer in model.layers:
        for var in layer.weights:
            if not var.dtype.is_floating:
                continue
            value = var.numpy()
            if value.size == 0 or not np.all(value == value.flat[0]):
                continue
            if value.flat[0] != 0:
                new = rng.uniform(0.5, 1.5, size=value.shape)
            else:
                new = rng.normal(0.0, 0.2, size=value.shape)
            var.assign(new.astype(value.dtype))
            replaced += 1
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return replaced


def _finalize_all(model) -> None:
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()


def _reload(tf, arch: str, path: Path, workdir: Path):
    """Reload the saved file; if Keras cannot deserialise it (kecam LeViT on Keras 2.13+), rebuild the
    architecture and load the file's weights into it."""
    try:
        if arch == "efficientnet_b0_qubvel":
            import efficientnet.tfkeras  # noqa: F401  (registers swish / FixedDropout for deserialisation)
        model = tf.keras.models.load_model(str(path), compile=False)
        how = "load_model"
    except Exception as exc:  # noqa: BLE001 - documented Keras deserialisation failures, see KERAS_NOTES 7
        print(f"[{arch}] load_model failed ({type(exc).__name__}); rebuilding and load_weights", flush=True)
        tf.keras.backend.clear_session()
        model = BUILDERS[arch](tf, workdir)
        model.load_weights(str(path))
        how = "rebuild+load_weights"
    _finalize_all(model)
    return model, how


def _linear_head(tf, model) -> None:
    """Switch the output layer's activation to linear so the model returns pre-softmax logits."""
    last = model.layers[-1]
    if hasattr(last, "activation"):
        last.activation = tf.keras.activations.linear


def reference_images(rng: np.random.Generator, lo: float, hi: float, size: tuple[int, int]) -> np.ndarray:
    """N_IMAGES images in [lo, hi] with different statistics, so that the logits depend visibly on the input
    (random-weight networks map i.i.d. noise images to almost the same logits): pixel noise, then blocky
    8x8-cell images with a random brightness and contrast."""
    h, w = size
    images = [rng.uniform(lo, hi, size=(h, w, 3))]
    for _ in range(N_IMAGES - 1):
        cells = rng.uniform(0.0, 1.0, size=(8, 8, 3))
        blocky = np.kron(cells, np.ones((-(-h // 8), -(-w // 8), 1)))[:h, :w]
        low, high = sorted(rng.uniform(0.0, 1.0, size=2))
        images.append(lo + (hi - lo) * (low + (high - low) * blocky))
    return np.stack(images).astype(np.float32)


def build_one(tf, arch: str, out: Path) -> dict:
    """Build, randomise, save, reload and record the reference logits of one fixture."""
    seed = arch_seed(arch)
    t0 = time.time()
    tf.keras.backend.clear_session()  # fresh auto-names: add, add_1, ... (the caffe ResNet's add_15)
    tf.keras.utils.set_random_seed(seed)
    with tempfile.TemporaryDirectory(dir=out) as work:
        work = Path(work)
        model = BUILDERS[arch](tf, work)
        replaced = randomize_constants(model, np.random.default_rng(seed))
        path = out / f"{arch}.h5"
        tmp = out / f".{arch}.h5.partial"
        model.save(str(tmp), save_format="h5")
        os.replace(tmp, path)
        del model
        gc.collect()
        tf.keras.backend.clear_session()
        model, how = _reload(tf, arch, path, work)
    _linear_head(tf, model)
    size = tuple(int(s) for s in model.input_shape[1:3])
    lo, hi = INPUT_RANGES[arch]
    images = reference_images(np.random.default_rng(seed + 1), lo, hi, size)
    logits = model(images, training=False)
    logits = np.asarray(logits.numpy(), dtype=np.float32)
    np.savez(out / f"{arch}.npz", inputs=images, logits=logits, input_range=np.array([lo, hi], np.float32))
    info = {"arch": arch, "seed": seed, "h5": path.name, "bytes": path.stat().st_size, "reload": how,
            "constants_randomised": replaced, "keras_name": model.name, "n_layers": len(model.layers),
            "logits_absmax": float(np.abs(logits).max()), "seconds": round(time.time() - t0, 2)}
    del model
    gc.collect()
    tf.keras.backend.clear_session()
    print(json.dumps(info), flush=True)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--arch", action="append", choices=ARCHS,
                        help="fixture to build (repeatable); default: all")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest["_env"] = {"tensorflow": tf.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    for arch in args.arch or ARCHS:
        manifest[arch] = build_one(tf, arch, out)
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
