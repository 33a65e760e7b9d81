"""Compiling brian2cuda projects (biosnn.backends.brian2_cuda_build): unity units, fingerprints, reuse of binaries.

No nvcc here: the unity transformation is compiled with g++ (kernels stubbed as
host functions), and make runs tiny makefiles that copy files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biosnn.backends import brian2_cuda_build as cb
from biosnn.errors import BackendError

ROOT = Path(__file__).resolve().parents[1]

# two code objects as brian2cuda writes them: the same support code in an anonymous namespace, the same
# macro, a file-scope helper of the same name, and a kernel that another code object launches
CODE_A = """#include "code_objects/a_codeobject.h"
#include "objects.h"
#include <stdio.h>

namespace {
    template <typename T> struct _higher_type;
    template <> struct _higher_type<int> { typedef int type; };
    inline int helper(int x) { return x + 1; }
}
#define _brian_pow(x, y) (pow((x), (y)))
static int getThreadsPerBundle() { return 32; }

__global__ void
_reset_a_codeobject(
    int* eventspace
    )
{
    eventspace[0] = helper(-1);
}

void _run_a_codeobject()
{
    int x[1] = {5};
    _reset_a_codeobject(x);
    record(x[0] + getThreadsPerBundle() + (int)_brian_pow(2, 1));
}
"""
HEADER_A = """#ifndef _INCLUDED_a_codeobject
#define _INCLUDED_a_codeobject

void _run_a_codeobject();

__global__ void _reset_a_codeobject(int*);

#endif
"""
CODE_B = """#include "code_objects/b_codeobject.h"
#include "objects.h"
#include "code_objects/a_codeobject.h"

namespace {
    template <typename T> struct _higher_type;
    template <> struct _higher_type<int> { typedef int type; };
    inline int helper(int x) { return x + 100; }
}
#define _brian_pow(x, y) (pow((double)(x), (y)))
static int getThreadsPerBundle() { return 64; }

void _run_b_codeobject()
{
    int x[1] = {7};
    _reset_a_codeobject(x);
    record(helper(x[0]) + getThreadsPerBundle() + (int)_brian_pow(3, 1));
}
"""
HEADER_B = "#ifndef _INCLUDED_b\n#define _INCLUDED_b\n\nvoid _run_b_codeobject();\n\n#endif\n"
OBJECTS_H = """#ifndef OBJ
#define OBJ
#include <math.h>
void record(int v);
#endif
"""
MAIN = """#include <stdio.h>
#include "objects.h"
#include "code_objects/a_codeobject.h"
#include "code_objects/b_codeobject.h"
void record(int v) { printf("%d\\n", v); }
int main() { _run_a_codeobject(); _run_b_codeobject(); return 0; }
"""


def _project(root: Path, flags: str = "-O2") -> Path:
    (root / "code_objects").mkdir(parents=True)
    for name, text in {"code_objects/a_codeobject.cu": CODE_A, "code_objects/a_codeobject.h": HEADER_A,
                       "code_objects/b_codeobject.cu": CODE_B, "code_objects/b_codeobject.h": HEADER_B,
                       "objects.h": OBJECTS_H, "main.cu": MAIN}.items():
        (root / name).write_text(text)
    # g++ stands in for nvcc (.cu compiled as C++, kernels as host functions); absolute paths as on a build machine
    (root / "makefile").write_text(
        "PROGRAM = main\n\n"
        "SRCS = code_objects/a_codeobject.cu code_objects/b_codeobject.cu main.cu\n"
        "OBJS = ${SRCS:.cu=.o}\n"
        f'NVCCFLAGS = -I. {flags} -Xcompiler "-I{root}/include -w"\n'
        f"LFLAGS = -L{root}/lib -Xlinker --enable-new-dtags -Xlinker -rpath,{root}/lib\n\n"
        "all: $(PROGRAM)\n\n$(PROGRAM): $(OBJS)\n\tg++ $(OBJS) -o $(PROGRAM)\n\n"
        "%.o : %.cu\n\tg++ -x c++ -D__global__= -I. -c $< -o $@\n")
    return root


needs_gxx = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("make") is None,
                               reason="needs g++ and make")


def _run(root: Path) -> list[str]:
    return subprocess.run([str(root / "main")], capture_output=True, text=True, check=True).stdout.split()


@needs_gxx
def test_unity_units_compile_and_keep_each_code_objects_meaning(tmp_path):
    plain = _project(tmp_path / "plain")
    assert cb.compile_project(plain, jobs=2)["compiled"]
    expected = _run(plain)
    assert expected == ["34", "167"]  # each code object its own helper, getThreadsPerBundle and _brian_pow

    unity = _project(tmp_path / "unity")
    srcs = cb.write_unity_sources(unity, units=1)
    assert srcs == ["biosnn_unity_0.cu", "main.cu"]
    text = (unity / "biosnn_unity_0.cu").read_text()
    assert "namespace _biosnn_a_codeobject {" in text and "namespace _biosnn_b_codeobject {" in text
    assert "void _run_a_codeobject() { _biosnn_a_codeobject::_run_a_codeobject(); }" in text
    assert "    using namespace _biosnn_a_codeobject;" in text  # the launched kernel left the namespace
    assert text.count("#undef _brian_pow") == 2
    assert "SRCS = biosnn_unity_0.cu main.cu" in (unity / "makefile").read_text()
    assert cb.compile_project(unity, jobs=2)["compiled"]
    assert _run(unity) == expected
    # writing again changes nothing (make keeps the objects); one unit per code object, too
    stamp = (unity / "biosnn_unity_0.cu").stat().st_mtime_ns
    assert cb.write_unity_sources(unity, units=1) == srcs
    assert (unity / "biosnn_unity_0.cu").stat().st_mtime_ns == stamp
    more = _project(tmp_path / "two")
    assert cb.write_unity_sources(more, units=5) == ["biosnn_unity_0.cu", "biosnn_unity_1.cu", "main.cu"]
    assert cb.compile_project(more, jobs=2)["compiled"] and _run(more) == expected
    # units=0: the project as brian2cuda wrote it
    assert cb.write_unity_sources(_project(tmp_path / "none"), units=0) == cb.makefile_sources(plain)


def test_unity_part_leaves_what_it_cannot_forward_alone():
    assert cb.unity_part(CODE_A, HEADER_A, "_ns") is not None
    assert cb.unity_part(CODE_A, HEADER_A.replace("void _run_a_codeobject();", "int _count(int);"), "_ns") is None
    assert cb.unity_part("namespace brian {\nint x;\n}\n", "void _run_x();\n", "_ns") is None
    # a declared kernel without a definition in the file
    assert cb.unity_part(CODE_B, HEADER_B + "__global__ void _reset_b(int*);\n", "_ns") is None


def test_unity_groups_depend_on_names_only():
    names = [f"code_objects/x{i}.cu" for i in range(10)]
    assert cb.unity_groups(names, 4) == cb.unity_groups(list(reversed(names)), 4)
    assert [len(g) for g in cb.unity_groups(names, 4)] == [3, 3, 2, 2]
    assert cb.unity_groups(names[:2], 8) == [["code_objects/x0.cu"], ["code_objects/x1.cu"]]
    assert cb.unity_groups([], 8) == []


@needs_gxx
def test_fingerprint_reuses_a_binary_built_elsewhere_and_rebuilds_on_changes(tmp_path):
    here = _project(tmp_path / "machine_a" / "proj")
    first = cb.compile_project(here, jobs=1)
    assert first["compiled"] and first["make_s"] > 0 and first["make_cpu_s"] > 0
    assert (here / cb.STAMP_NAME).read_text().split()[0] == first["fingerprint"]
    again = cb.compile_project(here, jobs=1)
    assert not again["compiled"] and again["make_s"] is None and again["make_cpu_s"] is None

    # the same project generated on another machine (other absolute paths, fresh time stamps, no
    # object files) with only the binary and its stamp carried over: reused, not compiled
    there = _project(tmp_path / "machine_b" / "elsewhere")
    for name in ("main", cb.STAMP_NAME):
        shutil.copy(here / name, there / name)
    assert cb.build_fingerprint(there) == first["fingerprint"]
    assert not cb.compile_project(there, jobs=1)["compiled"]
    assert not list(there.rglob("*.o"))

    # a changed source compiles again
    (there / "main.cu").write_text(MAIN.replace("return 0;", "return 0; /* changed */"))
    assert cb.compile_project(there, jobs=1)["compiled"]
    # changed flags: the object files compiled with the old ones are removed first
    mk = there / "makefile"
    mk.write_text(mk.read_text().replace("-O2", "-O3"))
    old_obj = there / "code_objects" / "a_codeobject.o"
    os.utime(old_obj, (time.time() + 60, time.time() + 60))  # newer than its source: make would keep it
    before = old_obj.stat().st_mtime_ns
    assert cb.compile_project(there, jobs=1)["compiled"]
    assert old_obj.stat().st_mtime_ns != before


@needs_gxx
def test_compile_failure_names_the_directory_and_shows_the_log(tmp_path):
    broken = _project(tmp_path / "broken")
    (broken / "main.cu").write_text("this is not C++\n")
    with pytest.raises(BackendError, match=r"(?s)nvcc/make failed in .*broken \(exit 2\):.*error"):
        cb.compile_project(broken, jobs=1)
    assert not (broken / cb.STAMP_NAME).exists()


def test_machine_free_flags_and_make_jobs(monkeypatch):
    line = ('NVCCFLAGS = -I. -arch=sm_90 -Xcompiler "-I/work/main/.venv/include -I/x/nvidia/cu13/include -w -O3"')
    assert cb.machine_free_flags(line) == 'NVCCFLAGS = -I. -arch=sm_90 -Xcompiler " -w -O3"'
    assert cb.machine_free_flags(line.replace("sm_90", "sm_80")) != cb.machine_free_flags(line)
    monkeypatch.setenv("BIOSNN_MAKE_JOBS", "16")
    assert cb.make_jobs() == 16
    monkeypatch.delenv("BIOSNN_MAKE_JOBS")
    assert cb.make_jobs() == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("BIOSNN_MAKE_JOBS", bad)
        with pytest.raises(BackendError, match=r"BIOSNN_MAKE_JOBS must be a positive integer"):
            cb.make_jobs()
    assert cb.portable_host_flags(["-O3", "-march=native", "-mtune=native", "-w"]) == ["-O3", "-w"]


def test_makefile_errors(tmp_path):
    with pytest.raises(BackendError, match=r"brian2cuda wrote no makefile"):
        cb.makefile_sources(tmp_path)
    (tmp_path / "makefile").write_text("PROGRAM = main\n")
    with pytest.raises(BackendError, match=r"no 'SRCS =' line"):
        cb.makefile_sources(tmp_path)
