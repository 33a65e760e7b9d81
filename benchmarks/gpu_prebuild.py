"""Compile the GPU check's cuda_standalone projects here (no GPU needed) and pack what the GPU machine needs.

GPU time is short (about 15 minutes a session, machine start included), nvcc is
not: this script does the compiling on a CPU machine, for compute capability 9.0
(H100/H200), and packs into the git-ignored folder ``.gpu/`` (carried to the GPU
machine with the device tool's ``carry``, 64 MiB at most):

* ``.gpu/prebuilt/<build directory>/main`` and ``main.biosnn-build`` (the
  binary's fingerprint) per project (``--projects``: the nvcc build test's network, the rate LeNet-5
  with 100 replicas x 100 windows, Brunel 10k/10M).  On the GPU machine biosnn generates the
  project again (code generation, static arrays: seconds), finds the
  fingerprint equal and runs the binary without compiling
  (:func:`biosnn.backends.brian2_cuda_build.compile_project`).  What is not
  prebuilt compiles there with ``make -j<cores>``, and the check reports how long.
* ``--assets``: ``.gpu/wheels/`` (brian2, brian2cuda, spikingjelly: the GPU
  machine's image lacks them and cannot download), ``.gpu/data/mnist.npz``,
  ``.gpu/models/`` (the trained LeNet-5 and the fine-tuned TDSNN/TPC models of ``benchmarks/.cache``,
  trained first when missing: ~10 min of one core).

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
#: what the GPU machine's image lacks (its package list: /work/.library/device/KINDS.md); spikingjelly's
#: ann2snn imports loguru; sympy and jinja2 as here, since Brian2 generates its code with them (another
#: version may print an expression differently, and the prebuilt binaries would not match)
WHEELS = ("brian2==2.10.1", "brian2cuda==1.0b1", "spikingjelly==2.0.0", "loguru==0.7.3", "sympy==1.14.0",
          "jinja2==3.1.6")


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


def train_models() -> None:
    """LeNet-5 (3 epochs on 60k MNIST images) and TDSNN/TPC fine-tuned from it (1 epoch, 10k): cached, as the check loads them."""
    import torch
    from biosnn.datasets import load_mnist
    from convert_mnist_rate import trained_lenet
    from convert_speed_cuda import CODINGS, finetuned
    torch.set_num_threads(1)
    x, y = load_mnist("train")
    model, _ = trained_lenet("avg", x, y, 3, 0)
    for coding in ("tdsnn", "tpc"):
        finetuned(model, coding, dict(CODINGS[coding][0]), x[:10000], y[:10000], 1, "n10000")


def baseline_sample(build_dir: Path, k: int) -> dict:
    """CPU seconds of nvcc for ``k`` of the project's code objects compiled one per file (brian2cuda's way).

    Compiled in a copy of ``build_dir`` (sources only), one after the other, with the project's makefile
    rule; the mean times the number of brian2cuda's translation units estimates a build without unity units.
    """
    import resource
    import tempfile
    from biosnn.backends.brian2_cuda_build import makefile_sources
    objects = sorted(p.relative_to(build_dir).as_posix() for p in (build_dir / "code_objects").glob("*.cu"))
    others = [s for s in makefile_sources(build_dir) if not s.startswith(("code_objects/", "biosnn_unity_"))]
    picked = objects[::max(1, len(objects) // k)][:k]
    with tempfile.TemporaryDirectory(prefix="biosnn_nvcc_sample_") as tmp:
        copy = Path(tmp) / "p"
        shutil.copytree(build_dir, copy, ignore=shutil.ignore_patterns("static_arrays", "results*", "*.o", "main"))
        times = {}
        for obj in picked:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = usage.ru_utime + usage.ru_stime
            subprocess.run(["make", obj[:-3] + ".o"], cwd=copy, check=True, capture_output=True)
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[obj] = usage.ru_utime + usage.ru_stime - t0
            print(f"  {obj}: {times[obj]:.1f} s CPU", flush=True)
    mean = sum(times.values()) / len(times)
    return {"sampled": times, "mean_cpu_s": mean, "code_objects": len(objects), "project_files": len(others),
            "estimate_cpu_s": mean * (len(objects) + len(others)), "load": os.getloadavg()}


def assets(out: Path) -> None:
    """Wheels the GPU machine lacks, MNIST and the trained models (trained first if not cached), into ``out``."""
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
        train_models()
    # LeNet-5 (convert_mnist_rate.trained_lenet) and the fine-tuned tdsnn/tpc models (convert_speed_cuda.finetuned)
    for model in sorted((ROOT / "benchmarks" / ".cache").glob("lenet5-*n60000-seed0.pt")) + sorted(
            (ROOT / "benchmarks" / ".cache").glob("lenet5-t*-n10000-e1.pt")):
        (out / "models").mkdir(parents=True, exist_ok=True)
        shutil.copy2(model, out / "models" / model.name)


def verify(names, replicas: int, windows: int, out: Path) -> dict:
    """Whether each packed binary still matches what this code generates (code generation only, no nvcc).

    Returns ``{project: "matches" | "differs: ..." | "not packed"}``; a project that differs would be
    compiled on the GPU machine (about half a minute there): rebuild it here with this script.
    """
    import tempfile
    from unittest import mock
    from biosnn.backends import brian2_cuda
    from biosnn.backends.brian2_cuda_build import STAMP_NAME, build_fingerprint
    specs = prebuild_specs(replicas, windows)
    verdicts = {}
    with tempfile.TemporaryDirectory(prefix="biosnn_verify_") as tmp:
        backend = brian2_cuda.CudaStandaloneBackend(cache_dir=tmp, compute_capability=COMPUTE_CAPABILITY)
        for name in names:
            found = {}

            def no_compile(directory, jobs=None):
                stamp = Path(directory) / STAMP_NAME
                now = build_fingerprint(directory)
                found["verdict"] = ("not packed" if not stamp.is_file() else "matches"
                                    if stamp.read_text().split()[0] == now else f"differs: fingerprint {now}")
                return {"compiled": False, "make_s": None, "make_cpu_s": None, "jobs": 0, "fingerprint": now}

            from biosnn.backends.brian2_standalone import structure_key
            spec = specs[name]
            key = structure_key(spec, spec.duration_seconds(), backend.options())
            packed = out / "prebuilt" / f"{spec.name}-{backend.device_name}-{key}"
            if packed.is_dir():
                shutil.copytree(packed, Path(tmp) / packed.name)
            with mock.patch.object(brian2_cuda, "compile_project", no_compile):
                backend.build(spec)
            verdicts[name] = found["verdict"] if packed.is_dir() else f"not packed (no {packed.name})"
            print(f"{name}: {verdicts[name]}", flush=True)
    return verdicts


def compile_section(manifest: dict) -> str:
    """The ``cuda_compile`` section of BENCHMARKS.md from the manifest of the builds made here."""
    lines = ["## nvcc compile of biosnn's CUDA projects (no GPU; `benchmarks/gpu_prebuild.py`)", "",
             "cuda_standalone projects compiled for compute capability 9.0 on the CPU machine, each at `nice -n 19`, "
             "one at a time, with biosnn's unity translation units (the code objects grouped into 8 files, each in "
             "its own namespace) and `make -j<cores>`. Wall times depend on the load (other jobs shared the 2 "
             "cores); CPU seconds (make and the compilers) do much less.", "",
             "| project | make -j | wall s | CPU s | 1-min load start -> end | binary MiB |", "|---|---|---|---|---|---|"]
    for name, e in sorted(manifest.items()):
        what = e["project"] + (f" ({e['replicas']} x {e['windows']})" if e.get("replicas") else "")
        cpu = e.get("make_cpu_s")
        lines.append(f"| {what} | {e['make_jobs']} | {e['make_s']:.0f} | {'—' if cpu is None else f'{cpu:.0f}'} | "
                     f"{e['load_before'][0]:.1f} -> {e['load_after'][0]:.1f} | {e['binary_bytes'] / 2**20:.1f} |")
    sources = sorted({e["make_cpu_s_source"] for e in manifest.values() if e.get("make_cpu_s_source")})
    if sources:
        lines += ["", "CPU s of " + ", ".join(e["project"] for e in manifest.values() if e.get("make_cpu_s_source"))
                  + ": " + "; ".join(sources) + " (measured before the script recorded make's CPU time itself)."]
    lines += ["", "Built with `BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 19 python benchmarks/gpu_prebuild.py "
              "--projects ...` (one project per build, one build at a time); the estimate below with "
              "`--baseline-sample 3`. Earlier, with brian2cuda's one file per code object: the test network "
              "as it was then (19 files, before the static-projection part) took 229 s wall, 292 s CPU on an idle "
              "machine (2026-11-23), the rate LeNet-5 100 x 100 1348 s wall "
              "at load ~4 (2026-11-24)."]
    for name, e in sorted(manifest.items()):
        b = e.get("baseline")
        if b and e.get("make_cpu_s"):
            files = b["code_objects"] + b["project_files"]
            lines += ["", f"brian2cuda's own layout for {e['project']} (one file per code object: {b['code_objects']} "
                      f"code objects + {b['project_files']} project files), estimated from {len(b['sampled'])} "
                      f"code objects compiled alone: {b['mean_cpu_s']:.1f} s CPU per file, {b['estimate_cpu_s']:.0f} s "
                      f"CPU for {files} files, against {e['make_cpu_s']:.0f} s CPU for the unity build "
                      f"({b['estimate_cpu_s'] / e['make_cpu_s']:.1f}x less; load {b['load'][0]:.1f} while sampling)."]
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--projects", nargs="*", default=["cuda_small", "lenet_rate", "brunel"],
                    choices=["cuda_small", "lenet_rate", "brunel"])
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--out", type=Path, default=GPU_DIR, help="the folder to carry")
    ap.add_argument("--builds", type=Path, default=ROOT / ".gpu-builds",
                    help="biosnn's build cache for these builds (sources, objects, static arrays: not carried)")
    ap.add_argument("--assets", action="store_true", help="also pack wheels, MNIST and the trained LeNet-5")
    ap.add_argument("--list", action="store_true", help="only list what is packed")
    ap.add_argument("--verify", action="store_true",
                    help="only check that the packed binaries match what this code generates (no nvcc)")
    ap.add_argument("--record", action="store_true",
                    help="record the compile figures of the manifest (benchmarks/report.py key cuda_compile)")
    ap.add_argument("--baseline-sample", type=int, default=0, metavar="K",
                    help="compile K of the rate LeNet's code objects one per file (no unity units) and estimate "
                         "brian2cuda's own build time from them (after its build)")
    args = ap.parse_args(argv)
    if args.verify:
        verdicts = verify(args.projects, args.replicas, args.windows, args.out)
        sys.exit(0 if all(v == "matches" for v in verdicts.values()) else 1)
    if not args.list:
        if args.assets:
            assets(args.out)
        if args.projects:
            build(args.projects, args.replicas, args.windows, args.out, args.builds)
        if args.baseline_sample:
            manifest_path = args.out / "prebuilt" / "manifest.json"
            manifest = json.loads(manifest_path.read_text())
            name = next(d for d, e in manifest.items() if e["project"] == "lenet_rate")
            manifest[name]["baseline"] = baseline_sample(args.builds / name, args.baseline_sample)
            manifest_path.write_text(json.dumps(manifest, indent=1))
            print(f"baseline: {manifest[name]['baseline']['mean_cpu_s']:.1f} s CPU per translation unit, "
                  f"estimate {manifest[name]['baseline']['estimate_cpu_s']:.0f} s CPU for "
                  f"{manifest[name]['baseline']['code_objects']} + {manifest[name]['baseline']['project_files']} files")
    if args.record:
        import report
        manifest = json.loads((args.out / "prebuilt" / "manifest.json").read_text())
        loads = [e["load_before"][0] for e in manifest.values()] + [e["load_after"][0] for e in manifest.values()]
        report.record("cuda_compile", compile_section(manifest), command=report.command_line(),
                      script="benchmarks/gpu_prebuild.py", data=manifest, load=(loads[0], loads[-1]))
    if listing(args.out) > CARRY_LIMIT - 4 * 2**20:
        print("WARNING: .gpu is too large to carry with the repository", file=sys.stderr)


if __name__ == "__main__":
    main()
