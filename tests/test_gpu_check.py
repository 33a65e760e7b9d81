"""The GPU check's driver and report (benchmarks/gpu_check.py, benchmarks/gpu_report.py), without a GPU and without builds."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_report  # noqa: E402


def test_run_boxed_stops_overrunning_steps_and_reports_exit_codes(tmp_path):
    log = open(tmp_path / "log", "w")
    t0 = time.perf_counter()
    status, wall = gpu_check.run_boxed([sys.executable, "-c", "import time; print('started', flush=True); "
                                        "time.sleep(60)"], 1.5, log)
    assert status == "timeout after 2 s (stopped)" and 1.4 < wall < 10 and time.perf_counter() - t0 < 10
    assert gpu_check.run_boxed([sys.executable, "-c", "import sys; sys.exit(3)"], 30, log)[0] == "failed (exit 3)"
    assert gpu_check.run_boxed([sys.executable, "-c", "print('figures')"], 30, log)[0] == "ok"
    log.close()
    text = (tmp_path / "log").read_text()
    assert "started" in text and "figures" in text


def test_plan_scales_boxes_to_the_budget():
    assert gpu_check.plan(["env", "tests"], 90, {"env": 30, "tests": 150}) == [("env", 15.0), ("tests", 75.0)]
    full = gpu_check.plan(list(gpu_check.BOXES), 540)
    assert sum(b for _, b in full) == pytest.approx(540)


def test_drive_passes_unused_time_on_and_skips_when_out_of_time(monkeypatch, tmp_path):
    walls = {"env": 1.0, "tests": 500.0}
    calls = []

    def fake(cmd, box, log_file):
        name = cmd[cmd.index("--step") + 1]
        calls.append((name, box))
        Path(cmd[cmd.index("--result") + 1]).write_text(json.dumps({"step": name}))
        return ("ok" if walls.get(name, 0) <= box else f"timeout after {box:.0f} s (stopped)"), min(walls.get(name, 0), box)

    monkeypatch.setattr(gpu_check, "run_boxed", fake)
    monkeypatch.setattr(gpu_check, "BOXES", {"env": 10, "tests": 40, "lenet": 50})
    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: clock[0])

    def advancing(cmd, box, log_file):
        status, wall = fake(cmd, box, log_file)
        clock[0] += wall
        return status, wall

    monkeypatch.setattr(gpu_check, "run_boxed", advancing)
    report = gpu_check.drive(["env", "tests", "lenet"], True, tmp_path, 100.0)
    # env used 1 of its 10 s: tests gets 40 + 9; it overran, so lenet has 100 - 1 - 49 = 50
    assert calls[0] == ("env", 10.0) and calls[1] == ("tests", 49.0) and calls[2] == ("lenet", 50.0)
    assert report["steps"]["tests"]["status"] == "timeout after 49 s (stopped)"
    assert report["steps"]["env"]["result"] == {"step": "env"}
    assert json.loads((tmp_path / "gpu_check.json").read_text())["steps"].keys() == {"env", "tests", "lenet"}
    # a step that overran its box (stopping it took long): the next has no time left
    calls.clear()
    clock[0] = 0.0

    def overrunning(cmd, box, log_file):
        status, wall = fake(cmd, box, log_file)
        wall = 58.0 if "tests" in cmd else wall
        clock[0] += wall
        return status, wall

    monkeypatch.setattr(gpu_check, "run_boxed", overrunning)
    report = gpu_check.drive(["env", "tests", "lenet"], True, tmp_path, 60.0)
    assert [c[0] for c in calls] == ["env", "tests"]
    assert report["steps"]["lenet"]["status"] == "not run: out of time"


def test_dry_run_env_step_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--steps", "env",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["meta"]["dry_run"] is True and report["meta"]["machine"]["cores"] >= 1
    env = report["steps"]["env"]
    assert env["status"] == "ok" and "versions" in env["result"] and "make_jobs" in env["result"]
    assert "env: ok" in (tmp_path / "gpu_check.log").read_text()


def _gpu_report() -> dict:
    """A GPU check report as the GPU machine would write it (numbers made up for the formatting)."""
    meta = {"date": "2026-12-05 10:00 UTC", "iso_date": "2026-12-05T10:00:00+00:00", "cpu": "Xeon", "cores": 16,
            "dry_run": False, "load_start": [0.5, 0.4, 0.3], "load_end": [3.0, 1.0, 0.5], "wall_s": 500.0,
            "command": "python benchmarks/gpu_check.py --out /out", "host": "gpu",
            "machine": {"cpu": "Xeon", "cores": 16, "ram_gb": 128.0, "gpu": "NVIDIA H200, 143771 MiB",
                        "description": "Xeon, 16 cores, 128.0 GB RAM, GPU: NVIDIA H200, 143771 MiB"}}
    rate = {"coding": "rate", "replicas": 100, "windows": 100, "images": 10000, "wall_s": 15.0, "run_s": 5.0, "ips": 2000.0,
            "events_per_s": 2e10, "acc": 0.99, "acc_ann": 0.9901, "agree": 0.995, "syn_bytes": 95e6,
            "synapses": 42182800, "cuda_build_s": 12.0, "compiled": False, "make_s": None}
    tdsnn = dict(rate, coding="tdsnn", wall_s=30.0, run_s=20.0, ips=500.0, events_per_s=5e9, compiled=True, make_s=25.0)
    return {"meta": meta, "steps": {
        "env": {"status": "ok", "wall_s": 5.0, "box_s": 17.0,
                "result": {"nvidia_smi": "NVIDIA H200, 580.159.04, 143771 MiB, 9.0", "nvcc_version": ["release 13.0"],
                           "versions": {"brian2": "2.10.1"}, "binaries_in_cache": ["a", "b", "c"]}},
        "tests": {"status": "ok", "wall_s": 80.0, "box_s": 121.0,
                  "result": {"cases": [{"name": "test_generate_and_compile_cuda", "time": 30.0, "outcome": "passed"},
                                       {"name": "test_digits_cnn_cuda_equals_cpp_per_sample", "time": 45.0,
                                        "outcome": "failed"}]}},
        "lenet": {"status": "ok", "wall_s": 60.0, "box_s": 105.0, "result": {
            "gpu": "NVIDIA H200", "backend": "cuda_standalone", "codings": {"rate": rate},
            "spikingjelly": [{"device": "cuda", "B": 1000, "ips": 4000.0, "acc": 0.99},
                             {"device": "cuda", "B": 10000, "ips": 1000.0, "acc": 0.99},
                             {"error": "SpikingJelly failed: out of memory"}]}},
        "brunel": {"status": "timeout after 121 s (stopped)", "wall_s": 121.0, "box_s": 121.0, "result": {
            "neurons": 10000, "duration_s": 1.0, "synapses": 10_000_000, "runs": {
                "cuda_standalone": {"build_s": 40.0, "run_s": 8.0, "events_per_s": 2.5e8, "rates_hz": {"exc": 30.0}}}}},
        "codings": {"status": "ok", "wall_s": 50.0, "box_s": 89.0,
                    "result": {"codings": {"tdsnn": tdsnn}, "spikingjelly": []}}}}


def test_report_sections_from_a_gpu_run():
    parts = dict(gpu_report.sections(_gpu_report()))
    assert list(parts) == ["gpu_check", "convert_speed_cuda", "gpu_networks"]
    check = parts["gpu_check"]
    assert check.startswith("## GPU check") and "DRY RUN" not in check
    assert "| brunel | timeout after 121 s (stopped) | 121.0 (121) |" in check
    assert "| `test_digits_cnn_cuda_equals_cpp_per_sample` | failed | 45.0 |" in check
    lenet = parts["convert_speed_cuda"]
    assert ("| rate | 100 x 100 | 10000 | 5.00 (15.00) | 2000 | 2e+10 | 99.00 % (99.01 %) | 99.50 % | 95.0 MB "
            "(2.25 B/syn.) | 12.0 (reused (prebuilt)) |") in lenet
    assert "| tdsnn | 100 x 100 | 10000 | 20.00 (30.00) | 500 |" in lenet and "(25 s) |" in lenet
    assert "| cuda, batch 1000 | 4000 | 99.00 % | 0.50x |" in lenet
    # the targets, against SpikingJelly's fastest batch
    assert "synaptic events/s >= 1e10: 2e+10 (met)" in lenet
    assert ("10k images <= 10 s: 5.0 s of binary runs, 15.0 s with code generation (met by the binary, "
            "not with code generation)") in lenet
    assert ">= 1x SpikingJelly's fastest batch at equal accuracy: 0.50x" in lenet
    assert "SpikingJelly failed: out of memory" in lenet
    nets = parts["gpu_networks"]
    assert "10,000,000 synapses" in nets and "| cuda_standalone | 40.0 | 8.00 | 2.5e+08 | exc 30.0 |" in nets
    assert "Diehl & Cook: not run." in nets


def test_report_records_with_the_gpu_machine_and_refuses_dry_runs(tmp_path):
    paths = gpu_report.record(_gpu_report(), root=tmp_path)
    assert [p.name for p in paths] == ["gpu_check.json", "convert_speed_cuda.json", "gpu_networks.json"]
    entry = json.loads(paths[1].read_text())
    assert entry["machine"]["gpu"] == "NVIDIA H200, 143771 MiB" and entry["load"] == {"start": 0.5, "end": 3.0}
    assert entry["date"] == "2026-12-05T10:00:00+00:00" and entry["title"].startswith("Converted LeNet-5")
    assert set(entry["data"]["steps"]) == {"lenet", "codings"}
    rendered = (tmp_path / "BENCHMARKS.md").read_text()
    assert "NVIDIA H200" in rendered and "Brunel 10k/10M" in rendered
    dry = copy.deepcopy(_gpu_report())
    dry["meta"]["dry_run"] = True
    assert "DRY RUN" in gpu_report.sections(dry)[0][1]
    with pytest.raises(SystemExit, match="a dry run's figures are not GPU figures"):
        gpu_report.record(dry, root=tmp_path)


def test_benchmark_modules_of_the_gpu_steps_import_what_they_use():
    """The lenet/codings steps and gpu_prebuild import LeNet codings and fine-tuning from convert_speed_cuda
    (a rewrite of convert_speed.py once removed them, and the GPU check would have failed on the device)."""
    code = ("import sys; sys.path[:0] = [sys.argv[1] + '/benchmarks', sys.argv[1], sys.argv[1] + '/examples']\n"
            "import convert_speed_cuda as c, gpu_prebuild, inspect\n"
            "assert set(c.CODINGS) >= {'rate', 'tdsnn', 'tpc'} and callable(c.finetuned)\n"
            "assert 'from convert_speed_cuda import CODINGS, finetuned' in inspect.getsource(gpu_prebuild)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
