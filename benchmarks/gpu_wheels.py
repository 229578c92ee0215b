"""Fetch (here, from PyPI) the wheels ``gpu_check.sh`` installs on the offline GPU machine, into ``.whl/``.

The GPU machine's image has Python 3.12 with torch, timm, scipy, scikit-learn, h5py, Pillow, matplotlib, but NumPy 2
and no brainscore. brainscore-core needs ``xarray<2022.6``, which needs NumPy 1.x, so this carries NumPy 1.26.4,
pandas 2.2.3, xarray 2022.3.0, brainscore-core/-vision and their import-time needs (netCDF4/cftime for assemblies,
boto3/botocore for brainio's fetch module, result-caching, pytz/tzdata). brainscore-vision's wheel (40 MB, mostly
in-tree plugins and their test images) is slimmed to its framework (model helpers, benchmark/metric base classes):
the device tool carries at most 64 MiB. Usage, in the repository root::

    python benchmarks/gpu_wheels.py            # writes .whl/ and adds it to .git/info/exclude

then run ``bash benchmarks/gpu_check.sh`` on the device with ``.whl`` carried.
"""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
REQUIREMENTS = ("numpy==1.26.4", "pandas==2.2.3", "xarray==2022.3.0", "brainscore-vision==2.4.2",
                "brainscore-core==2.5.0", "result-caching==0.5", "netCDF4==1.7.2", "cftime==1.6.4.post1",
                "boto3==1.35.99", "botocore==1.35.99", "s3transfer==0.10.4", "jmespath==1.0.1", "pytz==2024.2",
                "tzdata==2024.2", "importlib-metadata==8.5.0", "zipp==3.21.0")
#: brainscore_vision subpackages whose plugin folders are dropped (their top-level modules are kept)
PLUGIN_FOLDERS = ("models", "data", "benchmarks", "metrics")


def download() -> None:
    WHEELS.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "-d", str(WHEELS),
               *REQUIREMENTS]
    subprocess.run(command, check=True)


def _keep(name: str) -> bool:
    parts = name.split("/")
    if parts[0] == "docs" or name.endswith((".png", ".jpg", ".jpeg")):  # documentation and sample images
        return False
    if parts[0] != "brainscore_vision":
        return True
    return not (len(parts) > 3 and parts[1] in PLUGIN_FOLDERS)


def slim_brainscore_vision() -> Path:
    """Rewrite brainscore-vision's wheel without its plugin folders (RECORD regenerated)."""
    wheel = next(WHEELS.glob("brainscore_vision-*.whl"))
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        record_name = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        records = []
        for info in source.infolist():
            if info.filename == record_name or not _keep(info.filename):
                continue
            data = source.read(info.filename)
            target.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{info.filename},sha256={digest},{len(data)}")
        records.append(f"{record_name},,")
        target.writestr(record_name, "\n".join(records) + "\n")
    slim.replace(wheel)
    return wheel


def exclude_from_git() -> None:
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.exists():
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if "/.whl/" not in lines:
            exclude.write_text("\n".join([*lines, "/.whl/"]) + "\n")


def main() -> int:
    download()
    wheel = slim_brainscore_vision()
    exclude_from_git()
    total = sum(p.stat().st_size for p in WHEELS.glob("*.whl"))
    print(f"{len(list(WHEELS.glob('*.whl')))} wheels in {WHEELS} ({total / 2 ** 20:.1f} MiB; "
          f"{wheel.name} slimmed to {wheel.stat().st_size / 2 ** 20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
