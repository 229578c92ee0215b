"""Keras ``.h5`` -> PyTorch conversion of the released harmonized models (h5py only, no TensorFlow at run time).

``convert_keras(h5_path, arch, out_path) -> dict`` maps every tensor of the file onto the torch module of ``arch``
and refuses files with unmapped tensors; ``read_h5`` is the reader (see ``harmonized_models.keras.h5``).
"""
from __future__ import annotations

from .h5 import H5Model, KerasFormatError, KerasLayer, UnmappedTensorsError, read_h5

__all__ = ["H5Model", "KerasFormatError", "KerasLayer", "UnmappedTensorsError", "read_h5", "convert_keras", "ARCHS",
           "build_network", "load_converted", "register_arch", "ArchSpec", "get_arch"]


def __getattr__(name):
    if name in ("convert_keras", "ARCHS", "build_network", "convert_h5_model", "load_converted", "register_arch",
                "ArchSpec", "get_arch"):
        from . import convert

        return getattr(convert, name)
    raise AttributeError(name)
