"""benchmarks/report.py: one results file per benchmark, BENCHMARKS.md rendered from them (no simulation)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("benchmarks_report", ROOT / "benchmarks" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _section(title, line):
    return f"## {title}\n\n{line}\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_record_replaces_the_section(report, tmp_path):
    report.record("static_synapses", _section("Static synapses", "first run"), command="python x.py --a",
                  script="benchmarks/static_synapses.py", data={"rows": [1]}, load=(1.5, 2.5), root=tmp_path)
    report.record("static_synapses", _section("Static synapses", "second run"), command="python x.py --b",
                  script="benchmarks/static_synapses.py", data={"rows": [2], "numpy": {"b": np.bool_(True),
                  "i": np.int64(3), "a": np.arange(2), **report.scalars({"x": np.float32(0.5), "obj": object()})}},
                  root=tmp_path)
    files = sorted((tmp_path / "benchmarks" / "results").glob("*"))
    assert [f.name for f in files] == ["static_synapses.json"]
    entry = json.loads(files[0].read_text())
    assert entry["title"] == "Static synapses" and "second run" in entry["body"]
    assert entry["data"] == {"rows": [2], "numpy": {"b": True, "i": 3, "a": [0, 1], "x": 0.5}}
    assert entry["command"] == "python x.py --b" and entry["machine"]["cores"] >= 1
    assert set(entry["load"]) == {"start", "end"} and entry["date"][:4].isdigit()
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "second run" in text and "first run" not in text
    assert text.count("## Static synapses") == 1
    assert "generated** by `python benchmarks/report.py`" in text and "must not be edited by hand" in text


def test_render_is_deterministic_and_ordered(report, tmp_path):
    for key, title in (("zz_new_benchmark", "A new one"), ("static_synapses", "Static"), ("rate_mnist", "Rate")):
        report.record(key, _section(title, f"body of {key}"), command="c", script=f"benchmarks/{key}.py",
                      load=(1.0, 1.0), date="2026-12-01T10:00:00+00:00", root=tmp_path)
    results = report.load_results(tmp_path)
    assert [e["key"] for e in results] == ["rate_mnist", "static_synapses", "zz_new_benchmark"]
    first = report.render_markdown(results)
    assert first == report.render_markdown(report.load_results(tmp_path)) == (tmp_path / "BENCHMARKS.md").read_text()
    contents = first.split("## Contents")[1]
    positions = [contents.index(f"(#{key})") for key in ("rate_mnist", "static_synapses", "zz_new_benchmark")]
    assert positions == sorted(positions)
    assert "| [Rate](#rate_mnist) | 2026-12-01 |" in first


def test_section_needs_a_title_and_key_is_checked(report, tmp_path):
    with pytest.raises(ValueError, match="must start with a '## title' line"):
        report.record("x", "no heading\n", command="c", script="s", root=tmp_path)
    with pytest.raises(ValueError, match="letters, digits"):
        report.record("../escape", _section("T", "b"), command="c", script="s", root=tmp_path)


def test_every_results_file_renders_and_benchmarks_md_is_current(report):
    results = report.load_results(ROOT)
    assert results, "no benchmarks/results/*.json"
    keys = [e["key"] for e in results]
    assert len(keys) == len(set(keys))
    for e in results:
        assert e["title"] and e["body"].strip() and e["script"] and e["date"] and e["command"], e["key"]
        assert not e["body"].lstrip().startswith("## "), e["key"]
    text = report.render_markdown(results)
    assert text.count("\n## ") == len(results) + 1 + (1 if "## Figures across benchmarks" in text else 0)
    assert (ROOT / "BENCHMARKS.md").read_text() == text, \
        "BENCHMARKS.md is not the rendering of benchmarks/results: run `python benchmarks/report.py`"
    for name in report.figures_of(results):
        assert (ROOT / report.FIGURES / name).is_file(), name


def test_figures_from_data(report, tmp_path):
    ladder = [{"network": n, "synapses": s, "coding": "rate", "images_per_s": a, "sj_images_per_s": b}
              for n, s, a, b in (("LeNet-5", 4.2e5, 500.0, 400.0), ("VGG-ish", 4.0e6, 60.0, 90.0))]
    acc = [{"series": "rate", "label": None, "T": T, "steps": T, "accuracy_pct": a, "images": 100}
           for T, a in ((16, 95.0), (32, 97.0))]
    results = [{"key": "convert_speed", "title": "Speed", "body": "b\n", "script": "s", "date": "2026-12-01",
                "data": {"ladder": ladder, "accuracy_vs_T": acc}}]
    written = report.draw_figures(results, tmp_path)
    assert sorted(p.name for p in written) == ["accuracy_vs_steps.png", "speed_ladder.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    text = report.render_markdown(results)
    assert "benchmarks/figures/speed_ladder.png" in text and "benchmarks/figures/accuracy_vs_steps.png" in text
    assert report.draw_figures([{**results[0], "data": {}}], tmp_path / "none") == []
