"""Turn the GPU check's ``gpu_check.json`` (``benchmarks/gpu_check.py``) into BENCHMARKS.md sections.

    python benchmarks/gpu_report.py /work/.device/.../gpu_check.json            # print the sections
    python benchmarks/gpu_report.py /work/.device/.../gpu_check.json --write    # and record them

Three sections, recorded through ``benchmarks/report.py`` under the keys ``gpu_check``,
``convert_speed_cuda`` and ``gpu_networks`` (each replaces its results file; BENCHMARKS.md is re-rendered):
the check itself (machine, tests, steps, prebuilt binaries), the converted LeNet-5 on the GPU vs
SpikingJelly (every coding measured), and Brunel / Diehl & Cook on cuda_standalone vs
cpp_standalone.  A dry run's sections say so in their heading; they are meant to be printed, not written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

H_CHECK = "## GPU check: cuda_standalone on a GPU (`benchmarks/gpu_check.py`)"
H_LENET = "## Converted LeNet-5 on cuda_standalone, replicas x windows (rate, T = 32)"
H_NETS = "## Brunel 10k/10M and Diehl & Cook training on cuda_standalone vs cpp_standalone"
#: the issue's targets
TARGET_EVENTS = 1e10
TARGET_10K_S = 10.0


def _f(x, fmt="{:.1f}", none="—"):
    return none if x is None else fmt.format(x)


def _heading(h: str, dry: bool) -> str:
    return h + (" — DRY RUN (CPU, small sizes; not GPU figures)" if dry else "")


def _step(report, name) -> dict:
    return report["steps"].get(name, {"status": "not run"})


def check_section(report: dict) -> str:
    m = report["meta"]
    env = _step(report, "env").get("result", {})
    lines = [_heading(H_CHECK, m["dry_run"]), "",
             f"{m['date']} · host {m['cpu']}, {m['cores']} cores · GPU: {env.get('nvidia_smi', '?')} · "
             f"nvcc: {' '.join(env.get('nvcc_version') or ['?'])} · load {m['load_start'][0]:.1f} at the start · "
             f"`{m['command']}` · {m.get('wall_s', 0):.0f} s in all", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in (env.get('versions') or {}).items())}. "
             f"Compiled projects in the build cache at the start (the carried prebuilt ones): "
             f"{len(env.get('binaries_in_cache') or [])}.",
             "", "| step | status | wall s (box) |", "|---|---|---|"]
    for name, entry in report["steps"].items():
        lines.append(f"| {name} | {entry['status']} | {_f(entry.get('wall_s'))} ({_f(entry.get('box_s'), '{:.0f}')}) |")
    tests = _step(report, "tests").get("result", {})
    if tests.get("cases"):
        lines += ["", "| CUDA test | outcome | s |", "|---|---|---|"]
        lines += [f"| `{c['name']}` | {c['outcome']} | {c['time']:.1f} |" for c in tests["cases"]]
    elif tests.get("status"):
        lines += ["", f"CUDA tests: {tests['status']} ({len(tests.get('collected') or [])} collected)."]
    return "\n".join(lines) + "\n"


def lenet_section(report: dict) -> str:
    m = report["meta"]
    lenet = _step(report, "lenet").get("result", {})
    codings = dict(lenet.get("codings", {}))
    codings.update(_step(report, "codings").get("result", {}).get("codings", {}))
    lines = [_heading(H_LENET, m["dry_run"]), "",
             f"{m['date']} · GPU: {lenet.get('gpu', '?')} · host {m['cpu']}, {m['cores']} cores · "
             f"`benchmarks/gpu_check.py` (steps lenet, codings) · simulation backend: {lenet.get('backend')}", ""]
    if not codings:
        return "\n".join(lines + [f"Not measured: lenet step {_step(report, 'lenet')['status']}."]) + "\n"
    lines += ["Binary run s: the compiled binary's runs (loading its arrays, starting the GPU, simulating); images/s "
              "and events/s are taken from it. Wall s adds code generation and writing the arrays of the cached "
              "build. Build s: the separate first build (nvcc, or code generation only when a prebuilt binary "
              "matched).", "",
              "| coding | R x W | images | binary run s (wall s) | images/s | synaptic events/s | accuracy (ANN) | "
              "agreement | synapse storage | build s (nvcc) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in codings.items():
        nvcc = ("reused (prebuilt)" if r.get("compiled") is False else _f(r.get("make_s"), "{:.0f} s"))
        mem = f"{r['syn_bytes'] / 1e6:.1f} MB ({r['syn_bytes'] / max(r['synapses'], 1):.2f} B/syn.)"
        if "wall_s" in r:
            lines.append(f"| {name} | {r['replicas']} x {r['windows']} | {r['images']} | "
                         f"{r.get('run_s', r['wall_s']):.2f} ({r['wall_s']:.2f}) | "
                         f"{r['ips']:.0f} | {r['events_per_s']:.3g} | {r['acc'] * 100:.2f} % ({r['acc_ann'] * 100:.2f} %) | "
                         f"{r['agree'] * 100:.2f} % | {mem} | {_f(r.get('cuda_build_s'))} ({nvcc}) |")
        else:
            lines.append(f"| {name} | {r['replicas']} x {r['windows']} | — | not run | | | | | {mem} | "
                         f"{_f(r.get('cuda_build_s'))} ({nvcc}) |")
    sj = [r for r in lenet.get("spikingjelly", []) if "ips" in r]
    rate = codings.get("rate", {})
    if sj and "ips" in rate:
        lines += ["", "| SpikingJelly ann2snn (rate, 99.9 %, T = 32) | images/s | accuracy | biosnn rate / SJ |",
                  "|---|---|---|---|"]
        lines += [f"| {r['device']}, batch {r['B']} | {r['ips']:.0f} | {r['acc'] * 100:.2f} % | "
                  f"{rate['ips'] / r['ips']:.2f}x |" for r in sj]
        best = max(sj, key=lambda r: r["ips"])
        run_10k = rate.get("run_s", rate["wall_s"]) * 10000 / rate["images"]
        wall_10k = rate["wall_s"] * 10000 / rate["images"]
        lines += ["", "Targets (issue 19): "
                  f"synaptic events/s >= 1e10: {rate['events_per_s']:.3g} ({'met' if rate['events_per_s'] >= TARGET_EVENTS else 'not met'}); "
                  f"10k images <= 10 s: {run_10k:.1f} s of binary runs, {wall_10k:.1f} s with code generation "
                  f"({'met' if run_10k <= TARGET_10K_S else 'not met'}"
                  f"{'' if wall_10k <= TARGET_10K_S or run_10k > TARGET_10K_S else ' by the binary, not with code generation'}); "
                  f">= 1x SpikingJelly's fastest batch at equal accuracy: {rate['ips'] / best['ips']:.2f}x "
                  f"(accuracy {rate['acc'] * 100:.2f} % vs {best['acc'] * 100:.2f} %)."]
    for r in lenet.get("spikingjelly", []):
        if "error" in r:
            lines.append(f"\nSpikingJelly failed: {r['error']}")
    return "\n".join(lines) + "\n"


def nets_section(report: dict) -> str:
    m = report["meta"]
    lines = [_heading(H_NETS, m["dry_run"]), "", f"{m['date']} · host {m['cpu']}, {m['cores']} cores · "
             "`benchmarks/gpu_check.py` (steps brunel, diehl_cook); cpp_standalone single-threaded", ""]
    b = _step(report, "brunel").get("result")
    if b:
        lines += [f"Brunel (2000) model A, {b['neurons']} neurons, {b.get('synapses', 0):,} synapses, "
                  f"{b['duration_s']} s:", "", "| backend | build s | run s | synaptic events/s | rates Hz |",
                  "|---|---|---|---|---|"]
        for name, r in b["runs"].items():
            if "run_s" in r:
                rates = ", ".join(f"{k} {v:.1f}" for k, v in r["rates_hz"].items())
                lines.append(f"| {name} | {r['build_s']:.1f} | {r['run_s']:.2f} | {r['events_per_s']:.3g} | {rates} |")
            else:
                lines.append(f"| {name} | {r.get('status')} | | | |")
        lines.append("")
    else:
        lines += [f"Brunel: {_step(report, 'brunel')['status']}.", ""]
    d = _step(report, "diehl_cook").get("result")
    if d:
        lines += [f"Diehl & Cook (2015) training chunk of {d['samples']} MNIST samples:", "",
                  "| backend | build s | simulation s | samples/s | input synaptic events/s (expected) |",
                  "|---|---|---|---|---|"]
        for name, r in d["runs"].items():
            if "sim_wall_s" in r:
                lines.append(f"| {name} ({r['exc']} exc.) | {r['build_s']:.1f} | {r['sim_wall_s']:.2f} | "
                             f"{r['samples_per_s']:.2f} | {r['input_events_per_s']:.3g} |")
            else:
                lines.append(f"| {name} | {r.get('status')} | | | |")
    else:
        lines.append(f"Diehl & Cook: {_step(report, 'diehl_cook')['status']}.")
    return "\n".join(lines) + "\n"


#: results keys of benchmarks/report.py for the three sections
KEYS = ("gpu_check", "convert_speed_cuda", "gpu_networks")


def sections(report: dict) -> list[tuple[str, str]]:
    """``[(results key, section Markdown)]`` of a GPU check report."""
    return list(zip(KEYS, (check_section(report), lenet_section(report), nets_section(report))))


def record(report_data: dict, root: Path = ROOT) -> list[Path]:
    """Record the sections through ``benchmarks/report.py`` (replacing each key's results file), as measured on the GPU machine.

    ``report.record`` stamps the machine it runs on; the figures come from the GPU machine, whose
    description the check stored (``meta["machine"]``), so that replaces it before BENCHMARKS.md is rendered.

    Raises
    ------
    SystemExit
        For a dry run (its figures are not GPU figures).
    """
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report
    m = report_data["meta"]
    if m["dry_run"]:
        sys.exit("a dry run's figures are not GPU figures: not recorded")
    paths = []
    for key, section in sections(report_data):
        steps = {"gpu_check": None, "convert_speed_cuda": ("lenet", "codings"),
                 "gpu_networks": ("brunel", "diehl_cook")}[key]
        data = {"meta": m, "steps": {k: v for k, v in report_data["steps"].items() if steps is None or k in steps}}
        path = report.record(key, section, command=m["command"], script="benchmarks/gpu_check.py", data=data,
                             load=(m["load_start"][0], (m.get("load_end") or m["load_start"])[0]),
                             date=m.get("iso_date"), root=root)
        if m.get("machine"):
            entry = json.loads(path.read_text(encoding="utf-8"))
            entry["machine"] = m["machine"]
            path.write_text(json.dumps(entry, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    report.render(root)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--write", action="store_true",
                    help="record the sections (benchmarks/results/<key>.json) and re-render BENCHMARKS.md")
    args = ap.parse_args(argv)
    data = json.loads(args.report.read_text())
    for _, text in sections(data):
        print(text)
    if args.write:
        for path in record(data):
            print(f"recorded {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
