"""The `biosnn` command: outputs of a run, and one-paragraph errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from biosnn.cli import main
from biosnn.recording import Recording

ROOT = Path(__file__).resolve().parents[1]


def test_run_writes_recording_and_plots(tmp_path, capsys):
    rc = main(["run", "network_specs/cuba.yaml", "--duration", "20*ms", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "exc" in out and "wall time" in out
    rec = Recording.load(tmp_path / "recording.npz")
    assert rec.duration == pytest.approx(0.02) and set(rec.spikes) == {"exc", "inh"}
    assert Recording.load(tmp_path / "spikes.h5") == rec
    for name in ("raster.png", "rates.png", "states.png"):
        assert (tmp_path / name).stat().st_size > 5000


@pytest.mark.parametrize("args,message", [
    (["run", "missing.yaml"], "spec file not found: missing.yaml"),
    (["run", "network_specs/cuba.yaml", "--backend", "gpu"], "unknown backend 'gpu'"),
    (["run", "network_specs/cuba.yaml", "--duration", "5*mV"], "--duration must be a positive time"),
    (["run", "network_specs/cuba.yaml", "--param", "exc.Vt"], "cannot read the parameter setting 'exc.Vt'"),
    (["run", "network_specs/cuba.yaml", "--param", "exc.Vt=-40*mV"], "'exc' has no parameter 'Vt'"),
    (["train-stdp", "network_specs/diehl_cook_2015.yaml", "--out", "x", "--param", "XeAf.nu_ee_post=0.02"],
     "no population or projection named 'XeAf'"),
])
def test_bad_input_gives_one_paragraph_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("biosnn: error:") and message in err
    assert "Traceback" not in err


def test_invalid_spec_file_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "network_specs/cuba.yaml").read_text().replace("size: 800", "size: -800"))
    proc = subprocess.run([sys.executable, "-m", "biosnn.cli", "run", str(bad)], capture_output=True, text=True,
                          env=dict(os.environ, BIOSNN_PROGRESS="0"), cwd=ROOT)
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "populations.inh.size" in proc.stderr
    assert "Traceback" not in proc.stderr
