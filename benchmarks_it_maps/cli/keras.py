"""``brainscore convert-keras H5 --arch NAME --out FILE.safetensors``: Keras .h5 -> PyTorch safetensors.

Uses h5py only (no TensorFlow).  Every tensor of the file must map onto the torch module of ``--arch``; otherwise
nothing is written and the unmapped tensors are named.
"""
from __future__ import annotations

import argparse
import json

KNOWN_ARCHS = ("vgg16", "resnet50", "efficientnet_b0", "vit_b16", "levit128", "convnext_tiny", "maxvit_tiny")


def resolve_arch(name: str) -> str:
    """The converter arch for ``name``: an arch (``levit128``, also spelt ``levit_128``), a harmonized model id
    (``harmonized_levit_128``) or a released file name (``levit_small_harmonized.h5``); unknown names unchanged
    (the converter then lists the known ones)."""
    from harmonized_models.harmonized import HARMONIZED

    def key(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())
    for arch in KNOWN_ARCHS:
        if key(arch) == key(name):
            return arch
    for spec in HARMONIZED.values():
        names = (spec.identifier, spec.identifier.removeprefix("harmonized_"), spec.filename,
                 spec.filename.removesuffix(".h5"))
        if key(name) in {key(n) for n in names}:
            return spec.arch
    return name


def _arch_help() -> str:
    from harmonized_models.harmonized import HARMONIZED
    pairs = ", ".join(f"{spec.arch} ({spec.identifier}, {spec.filename})" for spec in HARMONIZED.values())
    return f"architecture of the file, by arch, model id or released file name: {pairs}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert-keras``."""
    parser = subparsers.add_parser(
        "convert-keras", help="convert a Keras .h5 model (e.g. a released harmonized model) to PyTorch safetensors",
        description=__doc__)
    parser.add_argument("h5", help="Keras .h5 file saved with model.save (legacy HDF5 format)")
    parser.add_argument("--arch", required=True, type=resolve_arch, help=_arch_help())
    parser.add_argument("--out", required=True, help="output .safetensors file (written atomically)")
    parser.set_defaults(func=handle_convert)


def handle_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks_it_maps.cli import UserError
    from harmonized_models.keras import KerasFormatError
    from harmonized_models.keras.convert import convert_keras, get_arch

    h5 = Path(args.h5)
    if not h5.is_file():
        raise UserError(f"{h5}: no such file (give the path of a Keras .h5 model)")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the output must end in .safetensors")
    try:
        get_arch(args.arch)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    try:
        report = convert_keras(h5, args.arch, out)
    except (KerasFormatError, ValueError, OSError) as exc:  # unmapped / malformed / unreadable: nothing written
        raise UserError(f"{exc} (nothing written)") from None
    summary = {k: report[k] for k in ("arch", "keras_model", "tensors_in_file", "parameters", "source_sha256",
                                      "out")}
    print(json.dumps(summary, indent=1))
    return 0
