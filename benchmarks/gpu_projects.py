"""The networks of the GPU check (``benchmarks/gpu_check.py``), defined once for building here and running there.

A cuda_standalone project compiled on a machine without a GPU
(``benchmarks/gpu_prebuild.py``) is reused on the GPU machine when the spec there
has the same structure (the build directory's key) and generates the same code
(the binary's fingerprint); both scripts take their specs from this module.
Compiling for compute capability :data:`COMPUTE_CAPABILITY` with GPU detection
off makes the generated code the same on both machines.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The GPU machine's architecture (H100/H200).
COMPUTE_CAPABILITY = 9.0
#: The folder carried to the GPU machine (git-ignored): wheels, data, model, prebuilt binaries.
GPU_DIR = ROOT / ".gpu"
LENET_T = 32


def lenet5_model(trained: bool = True):
    """LeNet-5 with average pooling: the cached trained one (``.gpu/models`` or ``benchmarks/.cache``), else untrained.

    The rate network's structure (and so its compiled binary) does not depend on the weights.
    """
    import torch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from convert_mnist_rate import lenet5
    torch.manual_seed(0)
    model = lenet5("avg")
    name = "lenet5-avg-e3-n60000-seed0.pt"
    if trained:
        for path in (GPU_DIR / "models" / name, ROOT / "benchmarks" / ".cache" / name):
            if path.is_file():
                model.load_state_dict(torch.load(path, weights_only=True))
                break
    return model.eval()


def calibration_images(n: int = 500):
    """The first ``n`` MNIST training images (``$BIOSNN_MNIST``), else seeded uniform noise of MNIST's shape."""
    import numpy as np
    if os.environ.get("BIOSNN_MNIST") and Path(os.environ["BIOSNN_MNIST"]).is_file():
        from biosnn.datasets import load_mnist
        return load_mnist("train")[0][:n]
    return np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)


def lenet_rate_snn(model=None, T: int = LENET_T, calib=None):
    """The rate-coded LeNet-5 (99.9 % percentile balancing), as convert_speed_cuda.py converts it."""
    import biosnn
    model = lenet5_model() if model is None else model
    calib = calibration_images() if calib is None else calib
    return biosnn.convert(model, "rate", calibration=calib, input_shape=(1, 28, 28), T=T,
                          normalization="percentile")


def cuda_small_spec():
    """The network of ``tests/test_cuda_backend.py``'s nvcc build test."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_cuda_backend import _small_spec
    return _small_spec()


def brunel_spec(n: int = 10000):
    """Brunel (2000) model A, ``n`` neurons, 10 % connectivity (10 M synapses for n = 10 000), 1 s."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from nest_vs_brian2 import brunel_spec as spec
    return spec(n=n)


def prebuild_specs(replicas: int, windows: int) -> dict:
    """``{name: spec}`` of the projects worth compiling ahead (the rest compiles on the GPU machine)."""
    return {"cuda_small": cuda_small_spec(),
            "lenet_rate": lenet_rate_snn(lenet5_model(trained=False)).spec_for(windows, replicas),
            "brunel": brunel_spec()}
