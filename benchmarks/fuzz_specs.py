"""Fuzz the spec loader: thousands of mutants of the shipped specs, each in a worker with a time limit.

Mutants come from ``tests/spec_mutations.py`` (structural YAML edits with
hostile values, text truncations and byte changes), seeded from both specs in
``network_specs/``.  Each mutant is loaded (and the first ``--run`` valid ones
run for 1 ms on the runtime backend); the outcome is counted as ``valid``,
``ran``, ``error`` (a biosnn error at load), ``build_error`` (loaded, then a
biosnn error at build or run: a gap in load validation), ``crash`` (any other
exception) or ``hang`` (no answer within ``--timeout`` seconds).  A payload that ran would
leave ``PWNED`` in the worker's directory: counted too.

Usage::

    python benchmarks/fuzz_specs.py --mutants 3000 --run 40

Prints the counts (and the first crashes, hangs with their seeds); exits 1 if
any mutant crashed, hung or ran a payload.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from spec_mutations import CaseRunner, mutate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=3000, help="mutants in total (split over the seed specs)")
    ap.add_argument("--start", type=int, default=0, help="first mutation seed")
    ap.add_argument("--run", type=int, default=40, help="run this many valid mutants for 1 ms (runtime backend)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds a mutant may take")
    ap.add_argument("--show", type=int, default=10, help="crashes/hangs to print")
    args = ap.parse_args(argv)
    seeds = {p.stem: p.read_text() for p in sorted((ROOT / "network_specs").glob("*.yaml"))}
    counts: dict[str, collections.Counter] = {k: collections.Counter() for k in seeds}
    bad, slowest = [], (0.0, None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cwd, folder = tmp / "cwd", tmp / "specs"
        cwd.mkdir(), folder.mkdir()
        runner = CaseRunner(timeout=args.timeout, cwd=cwd)
        ran = 0
        t0 = time.perf_counter()
        try:
            for n in range(args.mutants):
                name = sorted(seeds)[n % len(seeds)]
                seed = args.start + n
                path = folder / f"{name}_{seed}.yaml"
                path.write_text(mutate(seeds[name], seed))
                run_s = 0.001 if ran < args.run else 0.0
                # a run builds the network (seconds for CUBA's 4000 neurons): its own, longer limit
                outcome, message, seconds = runner.run(path, run_s=run_s,
                                                       timeout=max(args.timeout, 300.0) if run_s else None)
                if outcome == "valid" and ran < args.run:
                    outcome = "ran"
                ran += outcome == "ran"
                if (cwd / "PWNED").exists():
                    outcome = "payload"
                counts[name][outcome] += 1
                if outcome in ("crash", "hang", "payload", "build_error"):
                    bad.append((name, seed, outcome, message))
                if seconds > slowest[0] and outcome != "ran":
                    slowest = (seconds, f"{name} seed {seed} ({outcome})")
                path.unlink()
                if (n + 1) % 500 == 0:
                    print(f"{n + 1} mutants, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        finally:
            runner.close()
    wall = time.perf_counter() - t0
    total = sum(counts.values(), collections.Counter())
    print(f"fuzz_specs: {args.mutants} mutants (seeds {args.start}..{args.start + args.mutants - 1}) in {wall:.0f} s")
    kinds = ("valid", "ran", "error", "build_error", "crash", "hang", "payload")
    for name, c in counts.items():
        print(f"  {name}: " + ", ".join(f"{k} {c[k]}" for k in kinds))
    print("  total: " + ", ".join(f"{k} {total[k]}" for k in kinds))
    print(f"  slowest load: {slowest[0]:.2f} s ({slowest[1]})")
    for name, seed, outcome, message in bad[:args.show]:
        print(f"--- {outcome}: {name} seed {seed}\n{message}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
