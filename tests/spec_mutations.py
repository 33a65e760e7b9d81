"""Mutations of valid spec files for fuzzing the loader (tests/test_specs_are_data.py, benchmarks/fuzz_specs.py).

:func:`mutate` turns a valid spec (its YAML text) into a mutant from a seed:
structural edits of the parsed YAML (replace, delete or insert a value,
duplicate a part) with values drawn from a pool of hostile strings
(code-execution attempts, bombs, path escapes, unicode), numbers and nested
data, followed sometimes by edits of the text itself (truncation, a deleted or
duplicated line, changed bytes).  Deterministic for a given seed.
"""

from __future__ import annotations

import copy
import random

import yaml

HOSTILE_STRINGS = [
    "0*f(\"__import__('os').system('touch PWNED')\")",
    "__import__('os').system('touch PWNED')",
    "exp.__class__", "v.real", "x[0]", "lambda: 0", "open('PWNED', 'w')", "eval('1')", "exec",
    "9**9**9**9", "'a'*10**12", "(9**1024)**1024", "10**10**10", "N**N**N", "i**(N*N)", "2**-9999",
    "1e999*mV", "-1e999*mV", "0/0", "1/0*mV", "nan", "inf*ms", "-inf", "1e30*second", "1e-30*second",
    "mV**mV", "second**0.5", "volt**9**9", "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((x"
    "))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))", "-" * 300 + "1",
    "+".join(["v"] * 3000), "μV", "-50*μV", "\u00e9", "\x00", "\\", "#", "a: b", "{", "[", "*", "&a",
    "rand()", "randn()", "timestep(t, dt)", "clip(v, 0, 1)", "exp(1)**2000", "exprel(x)", "int(v)",
    "v > Vt", "v", "v = Vr", "v += 1\nv = 2", "dv/dt = -v/tau : volt", "x : volt (constant)",
    "dv/dt = -v/(10*ms) : volt**2", "nonsense", "euler", "exact", "../outside.npz", "/etc/passwd",
    "/dev/zero", "/proc/self/environ", "~/.ssh/id_rsa", "all_to_all", "one_to_one", "spikes", "state",
    "20*ms", "-60*mV", "0.5*nS", "1", "0", "True", "", " ", "1e308", "1e-320", "0x10", "1_000", "1j",
]
NUMBERS = [0, 1, -1, 2, 3, 7, 10 ** 12, 10 ** 18, -10 ** 12, 2 ** 63, 2 ** 64, 0.5, 0.999999, -0.5, 1e308,
           float("inf"), float("-inf"), float("nan"), 31623, 10 ** 6, True, False, None]
NAMES = ["exc", "inh", "v", "w", "p", "__import__", "eval", "os", "class", "2a", "a b", "", "x" * 200,
         "μ", "lambda", "N", "i", "t", "dt", "name", "size", "type", "file", "key", "values"]


def _paths(node, prefix=()):
    """Every (path, value) in a parsed YAML tree (mappings and lists)."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for k, v in enumerate(node):
            yield from _paths(v, prefix + (k,))


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if r < 0.45:
        return rng.choice(HOSTILE_STRINGS)
    if r < 0.7:
        return rng.choice(NUMBERS)
    if r < 0.8 and depth < 3:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if r < 0.9 and depth < 3:
        return {rng.choice(NAMES + ["file", "key", "unit", "values", "type"]): _value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    return "".join(rng.choice("abcv0123456789_*/+-(). '\"[]:#μ\\\n") for _ in range(rng.randint(0, 30)))


def _edit_string(rng: random.Random, s: str) -> str:
    if not s:
        return rng.choice(HOSTILE_STRINGS)
    k = rng.randrange(len(s) + 1)
    op = rng.random()
    piece = rng.choice(HOSTILE_STRINGS[:40] + list("'\"[].\\_μ#:*()x0"))
    if op < 0.4:
        return s[:k] + piece + s[k:]
    if op < 0.7:
        return s[:k] + s[k + rng.randint(1, 5):]
    return s[:k] + piece + s[k + 1:]


def mutate_data(data: dict, rng: random.Random) -> dict:
    """A structurally mutated copy of parsed spec data."""
    data = copy.deepcopy(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = [p for p, _ in _paths(data) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _get(data, path[:-1]), path[-1]
        op = rng.random()
        if op < 0.35:
            parent[key] = _value(rng)
        elif op < 0.55 and isinstance(parent[key], str):
            parent[key] = _edit_string(rng, parent[key])
        elif op < 0.7:
            del parent[key]
        elif op < 0.85 and isinstance(parent, dict):
            parent[rng.choice(NAMES)] = _value(rng)
        elif isinstance(parent, dict):
            other = _get(data, rng.choice(paths))
            parent[key] = copy.deepcopy(other)
        else:
            parent[key] = _value(rng)
    return data


def mutate_text(text: str, rng: random.Random) -> str:
    """A textual mutation: truncation, a deleted or duplicated line, or changed bytes."""
    op = rng.random()
    lines = text.splitlines(keepends=True)
    if op < 0.3:
        return text[:rng.randrange(len(text) + 1)]
    if op < 0.55 and lines:
        k = rng.randrange(len(lines))
        return "".join(lines[:k] + lines[k + 1:])
    if op < 0.75 and lines:
        k = rng.randrange(len(lines))
        return "".join(lines[:k + 1] + lines[k:])
    chars = list(text)
    for _ in range(rng.randint(1, 5)):
        if chars:
            chars[rng.randrange(len(chars))] = rng.choice("'\"[]{}&*!|>%@`:#-\t\n μ\x00")
    return "".join(chars)


def mutate(text: str, seed: int) -> str:
    """A mutant of a spec file's text (``seed`` decides everything)."""
    rng = random.Random(seed)
    data = yaml.safe_load(text)
    out = text
    if rng.random() < 0.8:
        out = yaml.safe_dump(mutate_data(data, rng), sort_keys=False, allow_unicode=True)
    if rng.random() < 0.35:
        out = mutate_text(out, rng)
    return out


# ---------------------------------------------------------------------------
# running cases in a worker process, with a time limit per case


def _worker(conn) -> None:  # pragma: no cover - runs in the child
    import time
    import traceback
    from pathlib import Path

    import biosnn
    from biosnn.errors import BiosnnError
    while True:
        job = conn.recv()
        if job is None:
            return
        path, run_s = job
        t0 = time.perf_counter()
        outcome = "error"
        try:
            spec = biosnn.load(Path(path))
            outcome, message = "valid", spec.name
            if run_s:
                from biosnn.backends.registry import get_backend
                outcome = "build_error"  # a valid spec that fails at build: a gap in load validation
                get_backend("runtime").build(spec).run(duration=run_s, progress=False)
                outcome = "ran"
        except BiosnnError as exc:
            message = str(exc)  # outcome: "error" at load, "build_error" after it
        except BaseException as exc:  # noqa: BLE001 - what the fuzz looks for
            outcome = "crash"
            message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
        conn.send((outcome, message, time.perf_counter() - t0))


class CaseRunner:
    """Loads spec files in a worker process; a case longer than ``timeout`` seconds is a hang (worker restarted).

    Parameters
    ----------
    timeout : float
        Seconds a case may take.
    cwd : path-like, optional
        Working directory of the worker (where a payload would drop its marker file).
    """

    def __init__(self, timeout: float = 10.0, cwd=None):
        self.timeout = timeout
        self.cwd = cwd
        self._proc = None

    def _start(self):
        import multiprocessing as mp
        import os
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        old = os.getcwd()
        if self.cwd is not None:
            os.chdir(self.cwd)
        try:
            self._proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            self._proc.start()
        finally:
            os.chdir(old)

    def run(self, path, run_s: float = 0.0, timeout: float | None = None) -> tuple[str, str, float]:
        """``(outcome, message, seconds)``: ``valid``, ``ran``, ``error``, ``build_error``, ``crash`` or ``hang``."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((str(path), run_s))
        limit = self.timeout if timeout is None else timeout
        if self._conn.poll(limit):
            return self._conn.recv()
        self._proc.kill()
        self._proc.join()
        self._proc = None
        return "hang", f"no answer within {limit} s", limit

    def close(self):
        if self._proc is not None and self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc = None
