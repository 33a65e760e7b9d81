"""The GPU check: validate and measure biosnn's cuda_standalone backend in one device call of under 10 minutes.

Run by ``scripts/gpu_check.sh`` on the GPU machine (which installs the carried wheels, puts the
prebuilt binaries into the build cache and sets the environment), or directly::

    python benchmarks/gpu_check.py --out OUT            # on a GPU machine
    python benchmarks/gpu_check.py --dry-run --out OUT  # anywhere: small sizes, CUDA steps 'not run: no GPU'

Steps, in this order, each in its own process with its own time box (a step that overruns is
stopped and reported as such; the next one still runs; the boxes are scaled to ``--budget``, 540 s
by default, and time a step leaves unused goes to the next):

``env``
    GPU, driver, nvcc, make, g++, package versions, the prebuilt binaries found.
``lenet``
    ``benchmarks/convert_speed_cuda.py --codings rate``: rate LeNet-5 on 10k MNIST test images,
    100 replicas x 100 windows, vs SpikingJelly on the same GPU in the same process.
``tests``
    ``pytest -m cuda tests/test_cuda_backend.py``: the nvcc build test (its static part equal to
    cpp_standalone) and the converted digits CNN on cuda_standalone equal to cpp_standalone per sample.
``brunel``
    Brunel (2000) model A, 10 000 neurons, 10 M synapses, 1 s, on cuda_standalone and
    cpp_standalone: build and run time, rates, synaptic events/s.
``codings``
    ``convert_speed_cuda.py --codings tdsnn tpc``: the TDSNN and TPC LeNet-5 on the GPU.
``diehl_cook``
    A Diehl & Cook (2015) STDP training chunk of 50 samples (``biosnn.learning.train``) on
    cuda_standalone and cpp_standalone: samples/s, input synaptic events/s.

Everything goes to ``OUT/gpu_check.json`` (figures, status and wall time per step) and
``OUT/gpu_check.log`` (all output); ``benchmarks/gpu_report.py OUT/gpu_check.json`` turns them into
the BENCHMARKS.md sections.  Without a visible GPU, CUDA parts are reported as ``not run: no GPU``;
``--dry-run`` shrinks every size so that the CPU parts (cpp_standalone, SpikingJelly on the CPU,
the report) run here in a few minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

NO_GPU = "not run: no GPU"
#: step -> time box in seconds on the GPU machine (the whole check fits one 10-minute command)
BOXES = {"env": 20, "lenet": 130, "tests": 150, "brunel": 150, "codings": 110, "diehl_cook": 90}
#: sizes of the full check and of the dry run
SIZES = {
    False: {"images": 10000, "replicas": 100, "windows": 100, "sj_batch": [100, 1000, 10000], "brunel_n": 10000,
            "brunel_s": 1.0, "dc_samples": 50, "coding_images": 10000},
    True: {"images": 40, "replicas": 2, "windows": 20, "sj_batch": [20], "brunel_n": 500, "brunel_s": 0.1,
           "dc_samples": 4, "coding_images": 40},
}


def log(msg: str) -> None:
    print(msg, flush=True)


def gpu_present() -> bool:
    from biosnn.backends.brian2_cuda import gpu_visible
    return gpu_visible()


def _cmd(args) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({type(exc).__name__})"


# --------------------------------------------------------------------------- steps (each in its own process)
def step_env(dry: bool, save) -> dict:
    from importlib.metadata import PackageNotFoundError, version
    versions = {}
    for pkg in ("brian2", "brian2cuda", "torch", "numpy", "spikingjelly", "sympy", "Cython"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    from biosnn.backends.brian2_cuda import curand_runtime_dir, find_nvcc, toolkit_has_curand
    from biosnn.backends.brian2_cuda_build import make_jobs
    from biosnn.backends.brian2_standalone import cache_root
    import torch
    cache = cache_root()
    prebuilt = sorted(p.parent.name for p in cache.glob("*/main")) if cache.exists() else []
    out = {"gpu_visible": gpu_present(), "torch_cuda": torch.cuda.is_available(),
           "nvidia_smi": _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                               "--format=csv,noheader"]),
           "nvcc": find_nvcc(), "nvcc_version": [v for v in _cmd([find_nvcc() or "nvcc", "--version"]).splitlines() if "release" in v],
           "make": shutil.which("make"), "gxx": shutil.which("g++"), "toolkit_curand": toolkit_has_curand(),
           "curand_runtime_dir": str(curand_runtime_dir()), "make_jobs": make_jobs(), "python": sys.version.split()[0],
           "versions": versions, "cache_dir": str(cache), "binaries_in_cache": prebuilt,
           "compute_capability_env": os.environ.get("BIOSNN_CUDA_COMPUTE_CAPABILITY")}
    save(out)
    return out


def step_tests(dry: bool, save, out_dir: Path) -> dict:
    xml = out_dir / "pytest_cuda.xml"
    env = dict(os.environ)
    from biosnn.backends.brian2_standalone import cache_root
    env.setdefault("BIOSNN_CUDA_TEST_CACHE", str(cache_root()))
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-rA", "-s",
           str(ROOT / "tests" / "test_cuda_backend.py"), f"--junitxml={xml}"]
    if not gpu_present():
        cmd.append("--collect-only")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    out = {"command": " ".join(cmd[1:]), "exit": proc.returncode, "wall_s": time.perf_counter() - t0,
           "tail": (proc.stdout + proc.stderr)[-4000:]}
    log(out["tail"])
    if not gpu_present():
        out["status"] = NO_GPU
        out["collected"] = [line for line in proc.stdout.splitlines() if "::" in line or "<Function" in line]
        return out
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        out["junit"] = {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")}
        out["cases"] = [{"name": c.get("name"), "time": float(c.get("time", 0)),
                         "outcome": ("failed" if c.find("failure") is not None or c.find("error") is not None
                                     else "skipped" if c.find("skipped") is not None else "passed")}
                        for c in suite.iter("testcase")]
    save(out)
    return out


def step_lenet(dry: bool, save, result_path: Path, codings=("rate",)) -> dict:
    from convert_speed_cuda import main as speed
    s = SIZES[dry]
    images = s["images"] if "rate" in codings else s["coding_images"]
    # the script writes its figures as it goes: a coding that fails or runs out of time keeps the others'
    argv = ["--codings", *codings, "--images", str(images), "--replicas", str(s["replicas"]),
            "--windows", str(s["windows"]), "--json", str(result_path), "--sj-batch", *map(str, s["sj_batch"])]
    if dry:
        argv += ["--cpu-fallback", "--epochs", "1", "--train-samples", "2000", "--finetune-epochs", "0",
                 "--calib", "100"]
    res = speed(argv)
    if not gpu_present():
        res["status"] = NO_GPU + " (dry run: cpp_standalone and SpikingJelly on the CPU)" if dry else NO_GPU
    save(res)
    return res


def brunel_events(spec, rec, duration: float) -> float:
    """Synaptic events of a Brunel run: recorded spikes (expected Poisson spikes for inputs) x out-degree."""
    from nest_vs_brian2 import synapse_counts
    counts = synapse_counts(spec)
    sizes = {p.name: p.size for p in spec.populations + spec.inputs}
    events = 0.0
    for proj in spec.projections:
        tr = rec.spikes.get(proj.source)
        if tr is None:
            inp = next(i for i in spec.inputs if i.name == proj.source)
            n_src = float(inp.rates.si().sum()) * duration
        else:
            n_src = float(len(tr.times))
        events += n_src * counts[proj.name] / sizes[proj.source]
    return events


def step_brunel(dry: bool, save) -> dict:
    from biosnn import get_backend
    from gpu_projects import brunel_spec
    from nest_vs_brian2 import synapse_counts
    s = SIZES[dry]
    spec, duration = brunel_spec(s["brunel_n"]), s["brunel_s"]
    out = {"neurons": s["brunel_n"], "duration_s": duration, "runs": {},
           "synapses": int(sum(synapse_counts(spec).values()))}
    for backend in ("cuda_standalone", "cpp_standalone"):
        if backend == "cuda_standalone" and not gpu_present():
            out["runs"][backend] = {"status": NO_GPU}
            continue
        t0 = time.perf_counter()
        sim = get_backend(backend).build(spec, duration=duration)
        build_s = time.perf_counter() - t0
        rec = sim.run(progress=False)
        run_s = float(rec.meta["wall_time_s"])
        events = brunel_events(spec, rec, duration)
        out["runs"][backend] = {
            "build_s": build_s, "compiled": sim.compiled, "make_s": getattr(sim, "make_s", None),
            "make_cpu_s": getattr(sim, "make_cpu_s", None),
            "run_s": run_s, "events": events, "events_per_s": events / run_s,
            "rates_hz": {k: len(tr.times) / spec.node(k).size / duration for k, tr in rec.spikes.items()}}
        log(f"brunel on {backend}: build {build_s:.1f} s, run {run_s:.2f} s, {events / run_s:.3g} events/s")
        save(out)
    return out


def step_diehl_cook(dry: bool, save) -> dict:
    import numpy as np
    import biosnn
    from biosnn.datasets import load_mnist
    from biosnn.learning.diehl_cook import train
    s = SIZES[dry]
    spec = biosnn.load(ROOT / "network_specs" / "diehl_cook_2015.yaml")
    x, y = load_mnist("train")
    n = s["dc_samples"]
    n_exc = 100 if dry else None
    out = {"samples": n, "runs": {}}
    for backend in ("cuda_standalone", "cpp_standalone"):
        if backend == "cuda_standalone" and not gpu_present():
            out["runs"][backend] = {"status": NO_GPU}
            continue
        res = train(spec, x[:n], y[:n], n_exc=n_exc, chunk=n, backend=backend, progress=False)
        exc = res.spec.population("Ae").size
        # expected input events: Poisson rate x*255/4 Hz per pixel over 350 ms, to every excitatory neuron
        events = float(np.sum(x[:n])) * 255 / 4 * 0.35 * exc
        out["runs"][backend] = {"build_s": res.build_s, "sim_wall_s": res.sim_wall_s, "wall_s": res.wall_s,
                                "samples_per_s": res.samples / res.sim_wall_s, "exc": exc,
                                "input_events_per_s": events / res.sim_wall_s, "repeats": res.repeats}
        log(f"diehl_cook on {backend}: {res.samples} samples, sim {res.sim_wall_s:.1f} s, build {res.build_s:.1f} s")
        save(out)
    return out


def run_step(name: str, dry: bool, result_path: Path, out_dir: Path) -> None:
    """Run one step in this process, writing its (partial) result to ``result_path`` as it goes."""
    def save(res):
        result_path.write_text(json.dumps(res, indent=1, default=str))
    steps = {"env": lambda: step_env(dry, save), "tests": lambda: step_tests(dry, save, out_dir),
             "lenet": lambda: step_lenet(dry, save, result_path), "brunel": lambda: step_brunel(dry, save),
             "diehl_cook": lambda: step_diehl_cook(dry, save),
             "codings": lambda: step_lenet(dry, save, result_path, codings=("tdsnn", "tpc"))}
    save(steps[name]())


# --------------------------------------------------------------------------- the driver
def run_boxed(cmd: list[str], box_s: float, log_file) -> tuple[str, float]:
    """Run ``cmd`` for at most ``box_s`` seconds, its output to ``log_file`` and the console; (status, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, cwd=ROOT)
    deadline = t0 + box_s
    timed_out = False
    os.set_blocking(proc.stdout.fileno(), False)
    while True:
        line = proc.stdout.readline()
        if line:
            sys.stdout.write(line)
            log_file.write(line)
            continue
        if proc.poll() is not None:
            break
        if time.perf_counter() > deadline:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.05)
    rest = proc.stdout.read() or ""
    sys.stdout.write(rest)
    log_file.write(rest)
    log_file.flush()
    wall = time.perf_counter() - t0
    if timed_out:
        return f"timeout after {box_s:.0f} s (stopped)", wall
    return ("ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"), wall


def plan(steps, budget_s: float, boxes=None) -> list[tuple[str, float]]:
    """Time boxes of ``steps`` scaled to add up to ``budget_s`` (down when over it, up when under).

    Examples
    --------
    >>> plan(["env", "tests"], 90, {"env": 30, "tests": 150})
    [('env', 15.0), ('tests', 75.0)]
    """
    boxes = boxes or BOXES
    total = sum(boxes[s] for s in steps)
    scale = budget_s / total if total else 1.0
    return [(s, boxes[s] * scale) for s in steps]


def meta(dry: bool) -> dict:
    import report
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    mach = report.machine()
    return {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "iso_date": now.isoformat(), "machine": mach,
            "host": platform.node(), "cpu": mach["cpu"], "cores": mach["cores"], "dry_run": dry,
            "load_start": os.getloadavg(), "command": report.command_line()}


def drive(steps, dry: bool, out_dir: Path, budget_s: float) -> dict:
    """Run the steps in their boxes; write and return ``gpu_check.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta(dry), "steps": {}}
    path = out_dir / "gpu_check.json"
    t_start = time.perf_counter()
    bank = 0.0  # time a step left unused goes to the next ones
    with open(out_dir / "gpu_check.log", "a") as log_file:
        for name, planned in plan(steps, budget_s):
            box = min(planned + bank, budget_s - (time.perf_counter() - t_start))
            if box < 5:
                report["steps"][name] = {"status": "not run: out of time", "box_s": max(box, 0.0)}
                continue
            result = out_dir / f"_{name}.step.json"
            result.unlink(missing_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--result", str(result),
                   "--out", str(out_dir)] + (["--dry-run"] if dry else [])
            log_file.write(f"== {name} (box {box:.0f} s)\n")
            log(f"== {name} (box {box:.0f} s)")
            status, wall = run_boxed(cmd, box, log_file)
            bank = max(0.0, box - wall)
            entry = {"status": status, "wall_s": wall, "box_s": box}
            if result.exists():
                entry["result"] = json.loads(result.read_text())
                result.unlink()
            report["steps"][name] = entry
            log(f"== {name}: {status} in {wall:.1f} s")
            log_file.write(f"== {name}: {status} in {wall:.1f} s\n")
            log_file.flush()
            report["meta"]["wall_s"] = time.perf_counter() - t_start
            report["meta"]["load_end"] = os.getloadavg()
            path.write_text(json.dumps(report, indent=1, default=str))
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    ap.add_argument("--dry-run", action="store_true", help="small sizes, anywhere (CUDA steps: not run without a GPU)")
    ap.add_argument("--steps", nargs="+", default=list(BOXES), choices=list(BOXES))
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the steps together (default: their share of 540 s, one 10-minute "
                         "device command; dry run: of 1800 s, the CPU machine compiles every project)")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        run_step(args.step, args.dry_run, args.result, args.out)
        return None
    budget = args.budget
    if budget is None:  # the default's share for the steps chosen
        budget = (1800.0 if args.dry_run else 540.0) * sum(BOXES[s] for s in args.steps) / sum(BOXES.values())
    report = drive(args.steps, args.dry_run, args.out, budget)
    for name, entry in report["steps"].items():
        log(f"{name:>11}: {entry['status']}")
    return report


if __name__ == "__main__":
    main()
