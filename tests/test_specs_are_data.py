"""Specs are data: hostile specs, fuzzed specs, confined side files, bounded work, checkpoints, cache binaries.

Every hostile spec (tests/hostile_specs/) and every fuzzed mutant of the shipped
specs ends in a biosnn error or a valid spec -- never another exception, never
a marker file written by a payload, never longer than a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from biosnn.errors import BackendError, BiosnnError, SpecError
from biosnn.spec import grammar, load_spec
from biosnn.spec.values import parse_quantity

sys.path.insert(0, str(Path(__file__).parent))
from spec_mutations import CaseRunner, mutate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).parent / "hostile_specs"
PAYLOAD = "0*f(\"__import__('os').system('touch PWNED')\")"
# hostile specs that are valid (suspicious names only): they must load and run
VALID = {"valid_names_like_builtins", "valid_plain", "exec_equation_comment_trick"}  # a comment is not code
# what each refused case must say (a fragment of the message)
EXPECTED = {
    "exec_equation": "string literals", "exec_threshold": "string literals", "exec_reset": "string literals",
    "exec_initial": "string literals", "exec_on_pre": "string literals", "exec_namespace_value": "reserved",
    "exec_namespace_key": "not a valid identifier", "exec_unit": "'__import__' in the line starts with '_'",
    "exec_unit_attr": "attribute access",
    "exec_method": "unknown integration method", "exec_rates": "string literals", "exec_weights": "string literals",
    "exec_operation": "string literals", "exec_timed_array_name": "not a valid identifier",
    "exec_lambda": "calls 'Lambda'", "exec_subscript": "subscripts", "exec_yaml_tag": "YAML syntax error",
    "exec_yaml_tag_inside": "YAML syntax error",
    "bomb_power_quantity": "exponent", "bomb_power_expression": "power in an exponent",
    "bomb_power_nested": "too large", "bomb_power_unit": "exponent", "bomb_power_indices": "integer indices",
    "bomb_string_repeat": "string literals", "bomb_parentheses": "nests parentheses",
    "bomb_unary": "nested more than", "bomb_long_sum": "nested more than", "bomb_huge_number": "characters",
    "bomb_yaml_aliases": "aliases are expanded", "bomb_yaml_alias_array": "aliases are expanded",
    "bomb_yaml_recursive": "refers to itself", "bomb_yaml_nesting": "nested more than",
    "bomb_yaml_block_nesting": "nested more than", "bomb_all_to_all": "GiB", "bomb_neurons": "GiB",
    "bomb_recording": "GiB", "bomb_dtype": "dtype must be one of", "bomb_dt_huge": "positive time of at most",
    "bomb_timed_dt_voltage": "positive time", "path_parent": "outside the spec's folder",
    "path_absolute": "outside the spec's folder", "path_dev_zero": "outside the spec's folder",
    "path_proc": "outside the spec's folder", "path_symlink_escape": "outside the spec's folder",
    "path_directory": "not a regular file", "path_fifo": "not a regular file", "path_not_text": "file name",
    "invalid_method": "unknown integration method", "invalid_flag": "bad equation flag",
    "invalid_threshold_not_condition": "is not a condition",
    "invalid_monitor_index": "whole numbers", "invalid_duplicate_key": "duplicate key 'duration'",
    "invalid_unused_model": "neuron_models.spare", "invalid_unicode_unit": "'μ'",
    "invalid_truncated": "missing field 'populations'", "invalid_not_utf8": "not UTF-8",
}


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("hostile_cwd")
    r = CaseRunner(timeout=30.0, cwd=cwd)
    r.run(HOSTILE / "valid_plain.yaml")  # warm-up: imports Brian2
    yield r, cwd
    r.close()


@pytest.fixture
def fifo(request):
    """The named pipe ``path_fifo.yaml`` reads, made for that case only (one test: no other xdist worker
    sees it come and go; a module fixture on two workers removed it under the other)."""
    if request.node.callspec.params["name"] != "path_fifo":
        yield None
        return
    path = HOSTILE / "fifo.npz"
    path.unlink(missing_ok=True)   # left by an interrupted run
    os.mkfifo(path)
    try:
        yield path
    finally:
        path.unlink()


def test_the_corpus_is_complete():
    names = {p.stem for p in HOSTILE.glob("*.yaml")}
    assert names == set(EXPECTED) | VALID


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | VALID))
def test_hostile_spec(name, runner, fifo):
    r, cwd = runner
    outcome, message, seconds = r.run(HOSTILE / f"{name}.yaml", run_s=0.002 if name in VALID else 0.0,
                                      timeout=20.0)
    assert not (cwd / "PWNED").exists() and not (HOSTILE / "PWNED").exists(), "a payload ran"
    assert seconds < 5.0, f"{name} took {seconds:.1f} s"
    if name in VALID:
        assert outcome == "ran", message
    else:
        assert outcome == "error", f"{name}: {outcome}: {message}"
        assert EXPECTED[name] in message, message
        assert str(HOSTILE / f"{name}.yaml") in message  # names the file


def test_side_files_outside_the_folder_need_consent(tmp_path):
    inner, outer = tmp_path / "inner", tmp_path / "outer"
    inner.mkdir(), outer.mkdir()
    np.savez(outer / "w.npz", w=np.arange(3.0))
    (inner / "s.yaml").write_text("name: t\npopulations:\n  a: {size: 3, model: lif, initial: "
                                  "{v: {file: ../outer/w.npz, key: w, unit: mV}}}\n")
    with pytest.raises(SpecError, match="outside the spec's folder") as info:
        load_spec(inner / "s.yaml")
    assert info.value.field == "populations.a.initial.v"
    assert "w.npz" not in str(info.value).replace("../outer/w.npz", "")  # no resolved path, no contents
    spec = load_spec(inner / "s.yaml", allow_outside=True)
    assert spec.population("a").initial["v"].data.tolist() == [0.0, 1.0, 2.0]


def test_missing_file_outside_the_folder_is_not_probed(tmp_path):
    (tmp_path / "s.yaml").write_text("name: t\npopulations:\n  a: {size: 3, model: lif, initial: "
                                     "{v: {file: /nonexistent/x.npz, key: w, unit: mV}}}\n")
    with pytest.raises(SpecError, match="outside the spec's folder"):  # not "not found": existence is not told
        load_spec(tmp_path / "s.yaml")


def test_npz_arrays_are_sized_before_they_are_read(tmp_path):
    np.savez(tmp_path / "big.npz", w=np.zeros(3))
    (tmp_path / "s.yaml").write_text("name: t\npopulations:\n  a: {size: 3, model: lif, initial: "
                                     "{v: {file: big.npz, key: w, unit: mV}}}\n")
    with pytest.raises(SpecError, match=r"array 'w' of 'big.npz' needs about .* GiB, more than the given"):
        load_spec(tmp_path / "s.yaml", memory_limit=10)
    assert load_spec(tmp_path / "s.yaml").population("a").size == 3


def test_memory_limit_refuses_and_can_be_raised(tmp_path):
    text = ("name: t\ndt: 0.1*ms\nduration: 1*ms\npopulations:\n  a: {size: 31623, model: lif}\nprojections:\n"
            "  p: {source: a, target: a, model: delta_voltage, weights: 1*mV}\n")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError, match=r"about 1000014129 synapses.*needs about .* GiB") as info:
        load_spec(tmp_path / "s.yaml", memory_limit=8e9)
    assert info.value.field == "projections.p.connect" and "memory_limit" in info.value.fix
    # the all-to-all count is exact, without expanding the n x n lists
    from biosnn.spec.budget import synapse_count
    text2 = text.replace("31623", "300")
    (tmp_path / "t.yaml").write_text(text2)
    spec = load_spec(tmp_path / "t.yaml")
    assert synapse_count(spec, spec.projection("p")) == 90000


def test_grammar_whitelist():
    ok = ["(El - v)/taum", "v > Vt and not_refractory", "exp(-t/tau)*rand()", "clip(w + 0.1, 0, 1)",
          "v**2 + 1e-3", "stim(t, i)", "-v", "x % 2 == 0"]
    for text in ok:
        grammar.check_expression(text, functions={"exp", "rand", "clip", "stim"})
    bad = {PAYLOAD: "string literals", "v.real": "attribute access", "x[0]": "subscripts",
           "9**9**9": "power in an exponent", "2**5000": "exponent larger", "f(1)": "calls 'f'",
           "exp(x=1)": "keyword", "_x": "reserved", "1j": "directly followed", "v if v else 0": "ifexp",
           "lambda: 0": "lambda syntax", "{1: 2}": "character"}
    for text, match in bad.items():
        with pytest.raises(SpecError, match=match):
            grammar.check_expression(text, functions={"exp"})
    assert grammar.check_statements("v = 0*mV\nw += 1  # comment") == ["v", "w"]
    for text in ("import os", "v == 1", "x, y = 1, 2", "v **= 2", "del v"):
        with pytest.raises(SpecError):
            grammar.check_statements(text)


def test_quantities_are_evaluated_without_eval():
    assert float(parse_quantity("(60*0.27/10)*mV")) == pytest.approx(1.62e-3)
    assert float(parse_quantity("second**-0.5") ** -2) == pytest.approx(1.0)
    for text, match in {"9**9**9**9": "exponent larger", "1e300**2": "too large", "mV**mV": "must be a number",
                        "__import__": "reserved", "ms.real": "attribute access", "'a'*3": "string literals"}.items():
        with pytest.raises(SpecError, match=match):
            parse_quantity(text)


# ---------------------------------------------------------------------------
# fuzzing the loader with mutants of both shipped specs (short; benchmarks/fuzz_specs.py runs thousands)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

SEEDS = {p.stem: p.read_text() for p in sorted((ROOT / "network_specs").glob("*.yaml"))}


@pytest.fixture(scope="module")
def fuzz_runner(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fuzz_cwd")
    r = CaseRunner(timeout=30.0, cwd=cwd)
    yield r, cwd, tmp_path_factory.mktemp("fuzz_specs")
    r.close()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(seed_spec=st.sampled_from(sorted(SEEDS)), seed=st.integers(0, 2 ** 32 - 1))
def test_fuzzed_specs_load_or_fail_cleanly(fuzz_runner, seed_spec, seed):
    r, cwd, folder = fuzz_runner
    path = folder / f"{seed_spec}_{seed}.yaml"
    path.write_text(mutate(SEEDS[seed_spec], seed))
    outcome, message, seconds = r.run(path, timeout=20.0)
    path.unlink()
    assert not (cwd / "PWNED").exists()
    assert outcome in ("valid", "error"), f"{seed_spec} seed {seed}: {outcome}: {message}"
    assert seconds < 10.0, f"{seed_spec} seed {seed} took {seconds:.1f} s"


# ---------------------------------------------------------------------------
# CLI: one paragraph, exit status 2


@pytest.mark.parametrize("name", ["exec_equation", "bomb_all_to_all", "invalid_not_utf8", "path_parent"])
def test_cli_errors_are_one_paragraph(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "biosnn.cli", "run", str(HOSTILE / f"{name}.yaml"), "--out",
                        str(tmp_path / "out"), "--memory-limit", "8e9"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("biosnn: error: "), p.stderr
    assert "Traceback" not in p.stderr and "report" not in p.stderr and "discourse" not in p.stderr


def test_cli_allow_outside_flag(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "biosnn.cli", "run", str(HOSTILE / "path_parent.yaml"), "--out",
            str(tmp_path / "out"), "--no-progress", "--duration", "1*ms"]
    p = subprocess.run(args + ["--allow-outside"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------------------
# checkpoints


def test_damaged_checkpoints_are_refused_cleanly(tmp_path):
    from biosnn.learning.checkpoint import load_checkpoint, save_checkpoint
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, {"w": np.arange(1000.0)}, {"consumed": 3})
    good = path.read_bytes()
    damaged = {"truncated": good[: len(good) // 2], "empty": b"", "bitflip": None, "text": b"hello"}
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x10
    damaged["bitflip"] = bytes(flipped)
    for name, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(BiosnnError, match=rf"cannot read checkpoint {path}.*damaged"):
            load_checkpoint(path)
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / ".checkpoint.npz.stale.tmp").write_bytes(b"left by a killed run")
    save_checkpoint(path, {"w": np.arange(3.0)}, {"consumed": 1})
    assert not list(tmp_path.glob(".*.tmp"))


def test_spec_hashes_name_the_changed_part():
    from biosnn.learning.checkpoint import data_hash, spec_hashes
    from biosnn.spec.parameters import set_parameters
    spec = load_spec(ROOT / "network_specs" / "diehl_cook_2015.yaml")
    a = spec_hashes(spec)
    b = spec_hashes(set_parameters(spec, ["XeAe.nu_ee_post=0.02"]))
    assert {k for k in a if a[k] != b.get(k)} == {"projections.XeAe"}
    assert spec_hashes(load_spec(ROOT / "network_specs" / "diehl_cook_2015.yaml")) == a
    x = np.zeros((3, 4))
    assert data_hash(x, None) == data_hash(x.copy(), None) != data_hash(x + 1, None)


def test_resume_refuses_another_spec_or_data(tmp_path, monkeypatch):
    from biosnn.learning import diehl_cook as dc
    from biosnn.learning.checkpoint import save_checkpoint
    spec = load_spec(ROOT / "network_specs" / "diehl_cook_2015.yaml")
    meta = {"spec": spec.name, "spec_hashes": {"populations.Ae": "1", "projections.XeAe": "2"},
            "data_hash": "d", "samples": 10, "seed": 0}
    ck = tmp_path / "checkpoint.npz"
    arrays = {k: np.zeros(2) for k in ("w", "delay", "theta", "sums", "counts")}
    save_checkpoint(ck, arrays, {**meta, "consumed": 5, "chunk": 1, "repeats": 0, "intensity": 2.0})
    assert dc._resume(ck, meta)["consumed"] == 5
    other = {**meta, "spec_hashes": {"populations.Ae": "1", "projections.XeAe": "3"}, "data_hash": "e"}
    with pytest.raises(BiosnnError, match=r"another training run \(spec: projections.XeAe changed.*training "
                                          r"data: other images.*--restart"):
        dc._resume(ck, other)
    save_checkpoint(ck, arrays, {**meta, "consumed": "five", "chunk": 1, "repeats": 0, "intensity": 2.0})
    with pytest.raises(BiosnnError, match="cannot read checkpoint"):
        dc._resume(ck, meta)


# ---------------------------------------------------------------------------
# build cache binaries


def test_binaries_without_a_recorded_hash_are_not_run(tmp_path, monkeypatch):
    from biosnn.backends import binary_hashes as bh
    monkeypatch.setenv("BIOSNN_HASH_DIR", str(tmp_path / "hashes"))
    build = tmp_path / "build"
    (build / "obj").mkdir(parents=True)
    (build / "main").write_bytes(b"\x7fELF built")
    (build / "obj" / "a.o").write_bytes(b"object")
    assert not bh.binary_is_trusted(build)
    with pytest.raises(BackendError, match="not the one biosnn built"):
        bh.check_binary(build)
    bh.record_binary(build)
    bh.check_binary(build)
    (build / "main").write_bytes(b"\x7fELF planted")
    with pytest.raises(BackendError, match="not the one biosnn built"):
        bh.check_binary(build)
    bh.untrust_build(build)
    assert not (build / "main").exists() and not (build / "obj" / "a.o").exists()


@pytest.mark.standalone
def test_tampered_standalone_binary_is_refused(build_cache):
    from biosnn.backends.registry import get_backend
    from biosnn.spec import ArrayValue, NetworkSpec, Population, SpikeMonitor
    spec = NetworkSpec("tamper", duration="5*ms", monitors=[SpikeMonitor("p")], populations=[
        Population("p", 2, "if_subtract", initial={"I": ArrayValue([100, 300], "pA")})])
    sim = get_backend("cpp_standalone", cache_dir=build_cache).build(spec)
    assert len(sim.run(progress=False).spikes["p"]) == 0
    main = sim.directory / "main"
    original = main.read_bytes()
    try:
        main.write_bytes(original + b"\0")
        with pytest.raises(BackendError, match="not the one biosnn built"):
            sim.run(progress=False)
    finally:
        main.write_bytes(original)
    sim.run(progress=False)


def test_brian2_failures_keep_their_cause():
    from types import SimpleNamespace

    from brian2.core.base import BrianObjectException

    from biosnn.backends.brian2_network import brian2_errors
    obj = SimpleNamespace(name="exc_stateupdater", _creation_stack="  File x", _full_creation_stack="  File x")
    with pytest.raises(BackendError) as info:
        with brian2_errors("build 'net'"):
            try:
                raise ValueError("Cannot integrate equations with method 'nonsense'")
            except ValueError as inner:
                raise BrianObjectException("An error occurred when preparing an object.", obj) from inner
    text = str(info.value)
    assert "in 'exc_stateupdater'" in text and "method 'nonsense'" in text, text
    assert "See above" not in text


def test_build_failures_of_spike_inputs_are_load_errors():
    from biosnn.spec import ArrayValue, NetworkSpec, Population, SpikeTimesInput
    def net(times, period=None):
        return NetworkSpec("n", dt="0.1*ms", populations=[Population("a", 2, "lif")], inputs=[
            SpikeTimesInput("s", 2, ArrayValue([0, 0]), ArrayValue(times, "ms"), period=period)])
    net([1.0, 1.2])
    with pytest.raises(SpecError, match="fires twice within one time step") as info:
        net([1.0, 1.05])
    assert info.value.field == "inputs.s.times"
    with pytest.raises(SpecError, match="not below the period"):
        net([1.0, 5.0], period="5*ms")
    with pytest.raises(SpecError, match="positive time"):
        net([1.0, 2.0], period="5*mV")


def test_projection_without_synapses_builds_and_runs():
    """Found by the fuzz: p = 0 draws no synapse, and Brian2's connect(i=[], j=[]) failed."""
    from biosnn.backends.registry import get_backend
    from biosnn.spec import NetworkSpec, Population, Projection, RandomP, SpikeMonitor
    spec = NetworkSpec("empty_projection", duration="2*ms", populations=[Population("a", 3, "lif")],
                       projections=[Projection("p", "a", "a", "delta_voltage", RandomP(0.0), weights="1*mV")],
                       monitors=[SpikeMonitor("a")])
    rec = get_backend("runtime").build(spec).run(progress=False)
    alone = get_backend("runtime").build(spec.replace(projections=())).run(progress=False)
    np.testing.assert_array_equal(rec.spikes["a"].times, alone.spikes["a"].times)  # no synapse, no effect
