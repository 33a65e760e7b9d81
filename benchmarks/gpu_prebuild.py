"""Compile the GPU check's cuda_standalone projects here (no GPU needed) and pack what the GPU machine needs.

GPU time is short (about 15 minutes a session, machine start included), nvcc is
not: this script does the compiling on a CPU machine, for compute capability 9.0
(H100/H200), and packs into the git-ignored folder ``.gpu/`` (carried to the GPU
machine with the device tool's ``carry``, 64 MiB at most):

* ``.gpu/prebuilt/<build directory>/main`` and ``main.biosnn-build`` (the
  binary's fingerprint) per project.  On the GPU machine biosnn generates the
  project again (code generation, static arrays: seconds), finds the
  fingerprint equal and runs the binary without compiling
  (:func:`biosnn.backends.brian2_cuda_build.compile_project`).  What is not
  prebuilt compiles there with ``make -j<cores>``, and the check reports how long.
* ``--assets``: ``.gpu/wheels/`` (brian2, brian2cuda, spikingjelly: the GPU
  machine's image lacks them and cannot download), ``.gpu/data/mnist.npz``,
  ``.gpu/models/`` (the trained LeNet-5 of ``benchmarks/.cache``, if there).

Every nvcc build runs at ``nice -n 19`` here; compile times are printed with the
machine's load and written to ``.gpu/prebuilt/manifest.json``::

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 19 .venv/bin/python benchmarks/gpu_prebuild.py --assets
    .venv/bin/python benchmarks/gpu_prebuild.py --list        # what is packed, and its size

See ``benchmarks/README.md`` (GPU check) for the device call that uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_projects import COMPUTE_CAPABILITY, GPU_DIR, prebuild_specs  # noqa: E402

CARRY_LIMIT = 64 * 2**20
WHEELS = ("brian2==2.10.1", "brian2cuda==1.0b1", "spikingjelly==2.0.0")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def build(names, replicas: int, windows: int, out: Path, builds: Path) -> dict:
    """Compile each named project (biosnn's build cache in ``builds``), pack its binary into ``out``; the manifest."""
    from biosnn.backends.brian2_cuda import CudaStandaloneBackend
    from biosnn.backends.brian2_cuda_build import STAMP_NAME
    specs = prebuild_specs(replicas, windows)
    manifest_path = out / "prebuilt" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    backend = CudaStandaloneBackend(cache_dir=builds, compute_capability=COMPUTE_CAPABILITY)
    for name in names:
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        sim = backend.build(specs[name])
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()
        target = out / "prebuilt" / sim.directory.name
        target.mkdir(parents=True, exist_ok=True)
        for f in ("main", STAMP_NAME):
            shutil.copy2(sim.directory / f, target / f)
        manifest[sim.directory.name] = {
            "project": name, "replicas": replicas if name == "lenet_rate" else None,
            "windows": windows if name == "lenet_rate" else None, "compiled_now": sim.compiled,
            "make_s": sim.make_s, "make_cpu_s": getattr(sim, "make_cpu_s", None), "make_jobs": sim.make_jobs, "build_s": wall,
            "unity_units": backend.unity_units, "load_before": load0, "load_after": load1,
            "binary_bytes": (target / "main").stat().st_size, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(f"{name}: {sim.directory.name}: build {wall:.0f} s (make {sim.make_s} s, -j{sim.make_jobs}, "
              f"compiled now: {sim.compiled}), load {load0[0]:.1f} -> {load1[0]:.1f}, "
              f"binary {manifest[sim.directory.name]['binary_bytes'] / 2**20:.1f} MiB", flush=True)
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def assets(out: Path) -> None:
    """Wheels the GPU machine lacks, MNIST and the trained LeNet-5, into ``out``."""
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(wheels)]
    for plat in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64", "any"):
        cmd += ["--platform", plat]
    subprocess.run(cmd + list(WHEELS), check=True)
    mnist = os.environ.get("BIOSNN_MNIST")
    if mnist and Path(mnist).is_file():
        (out / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy2(mnist, out / "data" / "mnist.npz")
    model = ROOT / "benchmarks" / ".cache" / "lenet5-avg-e3-n60000-seed0.pt"
    if model.is_file():
        (out / "models").mkdir(parents=True, exist_ok=True)
        shutil.copy2(model, out / "models" / model.name)


def listing(out: Path) -> int:
    carried = sorted(out.iterdir()) if out.exists() else []
    total = 0
    for p in carried:
        size = folder_bytes(p) if p.is_dir() else p.stat().st_size
        total += size
        print(f"{p.relative_to(ROOT)}: {size / 2**20:.1f} MiB")
    print(f"carried in all: {total / 2**20:.1f} MiB "
          f"of the device tool's {CARRY_LIMIT / 2**20:.0f} MiB (the repository adds its tracked files)")
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", nargs="*", default=["cuda_small", "lenet_rate"],
                    choices=["cuda_small", "lenet_rate"])
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--out", type=Path, default=GPU_DIR, help="the folder to carry")
    ap.add_argument("--builds", type=Path, default=ROOT / ".gpu-builds",
                    help="biosnn's build cache for these builds (sources, objects, static arrays: not carried)")
    ap.add_argument("--assets", action="store_true", help="also pack wheels, MNIST and the trained LeNet-5")
    ap.add_argument("--list", action="store_true", help="only list what is packed")
    args = ap.parse_args(argv)
    if not args.list:
        if args.assets:
            assets(args.out)
        if args.projects:
            build(args.projects, args.replicas, args.windows, args.out, args.builds)
    if listing(args.out) > CARRY_LIMIT - 4 * 2**20:
        print("WARNING: .gpu is too large to carry with the repository", file=sys.stderr)


if __name__ == "__main__":
    main()
