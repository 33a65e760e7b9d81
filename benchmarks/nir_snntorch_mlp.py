"""NIR at scale: an snnTorch MLP exported with snnTorch's NIR exporter, run in snnTorch and in biosnn.

Builds ``Linear(784, H) -> Leaky -> Linear(H, 10) -> Leaky`` (random weights scaled so both layers fire),
feeds ``T`` steps of Bernoulli(0.2) input, and compares the spike trains of both layers step for step
between snnTorch (float32, torch) and biosnn (``biosnn.run_nir``, float64) on ``runtime`` and
``cpp_standalone``; prints mismatches, spike counts and wall times (biosnn: import + build + run, and the
run alone for cpp_standalone with the build cached), and records a section in BENCHMARKS.md
(``--no-record``: don't).

    python benchmarks/nir_snntorch_mlp.py --hidden 500 --steps 300
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    warnings.filterwarnings("ignore")
    import snntorch as snn
    import torch
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    from biosnn import get_backend
    from biosnn.frontends.nir.importer import build
    from biosnn.frontends.nir.run import spikes_of
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    H, T = args.hidden, args.steps
    net = torch.nn.Sequential(torch.nn.Linear(784, H),
                              snn.Leaky(beta=torch.full((H,), 0.9), threshold=torch.ones(H), init_hidden=True),
                              torch.nn.Linear(H, 10),
                              snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.ones(10), init_hidden=True,
                                        output=True))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.mul_(3.0)
    graph = export_to_nir(net, torch.zeros(1, 784), ignore_dims=[0])
    utils.reset(net)
    x = (torch.rand(T, 784) < 0.2).float()
    hidden = []
    net[1].register_forward_hook(lambda mod, inp, out: hidden.append(out[0].detach().numpy().copy()))
    t0 = time.perf_counter()
    with torch.no_grad():
        out = np.array([net(x[t][None])[0][0].numpy() for t in range(T)])
    tool_s = time.perf_counter() - t0
    ref = {"1": np.array(hidden), "3": out}
    rows = []
    for backend in ("runtime", "cpp_standalone"):
        t0 = time.perf_counter()
        imp = build(graph, flavor="snntorch", x=x.numpy())
        sim = get_backend(backend).build(imp.spec)
        t1 = time.perf_counter()
        rec = sim.run(progress=False)
        t2 = time.perf_counter()
        res = spikes_of(imp, rec)
        mism = {k: int((ref[k] != res[k]).sum()) for k in ref}
        rows.append({"backend": backend, "hidden_spikes": int(res["1"].sum()), "output_spikes": int(res["3"].sum()),
                     "mismatch_hidden": mism["1"], "mismatch_output": mism["3"], "total_s": t2 - t0, "run_s": t2 - t1})
    lines = [f"| simulator | hidden spikes | output spikes | steps x neurons differing from snnTorch | "
             f"wall (s): import + build + run | run only (s) | run time / snnTorch's |", "|---|---|---|---|---|---|---|",
             f"| snnTorch 1.0 (torch, 1 thread) | {int(ref['1'].sum())} | {int(ref['3'].sum())} | - | {tool_s:.2f} | "
             f"{tool_s:.2f} | 1 |"]
    for r in rows:
        lines.append(f"| biosnn {r['backend']} | {r['hidden_spikes']} | {r['output_spikes']} | "
                     f"{r['mismatch_hidden']} + {r['mismatch_output']} | {r['total_s']:.2f} | {r['run_s']:.2f} | "
                     f"{r['run_s'] / tool_s:.2g} |")
    cmd = "python benchmarks/nir_snntorch_mlp.py " + " ".join(sys.argv[1:])
    print("\n".join(lines))
    if not args.no_record:
        _record(args, cmd, "\n".join(lines), rows, tool_s, load_start)


def _record(args, cmd, table, rows, tool_s, load_start):
    sys.path.insert(0, os.path.dirname(__file__))
    import report  # benchmarks/report.py
    H, T = args.hidden, args.steps
    report.record("nir_snntorch_mlp",
                  f"## NIR: snnTorch MLP 784-{H}-10 run in biosnn, spike for spike\n\n"
                  f"{datetime.date.today()} · {platform.processor() or platform.machine()}, {os.cpu_count()} cores · "
                  f"`{cmd}`\n\nRandom weights (x3), Bernoulli(0.2) input, {T} steps; graph from snnTorch's own "
                  f"NIR exporter, flavor `snntorch`. Differences would come from float32 (snnTorch) vs float64 "
                  f"(biosnn) rounding at threshold crossings. cpp_standalone's wall time includes its compile "
                  f"(or the cached build).\n\n{table}\n",
                  command=cmd, script="benchmarks/nir_snntorch_mlp.py", data={"hidden": H, "steps": T, "rows": rows,
                                                                              "tool_s": tool_s},
                  load=(load_start, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
