"""Generate, compile, cache and install NESTML modules against NEST from PyPI.

The ``nest-simulator`` wheel ships its headers and ``nestkernel_api.so`` but no
``nest-config`` script, no ``ltdl.h`` and no Boost headers, all of which
NESTML's CMake build expects.  This module supplies them:

* a stand-in ``nest-config`` (a small shell script printing the wheel's
  compiler flags, include directories and library) in a toolchain directory;
* a stub ``ltdl.h`` (NEST's module header only needs the ``lt_dlhandle`` type);
* the include directory of the ``boost-headers`` wheel;
* ``LD_LIBRARY_PATH`` pointing at the installed modules before ``nest.Install``.

Modules are cached under ``$BIOSNN_CACHE_DIR/nestml`` (or
``~/.cache/biosnn/nestml``) by a hash of the NESTML text, the NEST version
and the NESTML version, so a second run does not compile.  Generation runs in
a subprocess: its log is kept and searched for NESTML's errors, because
``generate_nest_target`` prints them ("contains errors. No code generated!")
and returns normally.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from biosnn.errors import BackendError

__all__ = ["nestml_cache_root", "compile_module", "install_modules", "toolchain_dir"]

_LTDL_STUB = "/* stand-in for libltdl's header: NEST's module API needs only this type */\n" \
             "typedef struct lt__handle *lt_dlhandle;\n"


def nestml_cache_root() -> Path:
    """Root of compiled NESTML modules (``$BIOSNN_CACHE_DIR/nestml`` or ``~/.cache/biosnn/nestml``)."""
    env = os.environ.get("BIOSNN_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "biosnn") / "nestml"


def _site_dir(package: str) -> Path:
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"compiling NESTML models needs the Python package '{package}': "
                           "pip install 'biosnn[nest]' (nest-simulator, nestml, boost-headers)")
    return Path(list(spec.submodule_search_locations)[0])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def toolchain_dir(root: Path | None = None) -> Path:
    """A directory with ``bin/nest-config`` and ``include/ltdl.h`` for the installed NEST wheel.

    Parameters
    ----------
    root : Path, optional
        Where to write it (default: the NESTML cache root).

    Returns
    -------
    Path
        The directory to pass to NESTML as ``nest_path``.
    """
    nest_dir = _site_dir("nest")
    prefix = _source_build_prefix(nest_dir)
    if prefix is not None:  # NEST built from source (e.g. with MPI) has its own nest-config and headers
        return prefix
    boost = _site_dir("boost_headers") / "include"
    if not (boost / "boost").is_dir():
        raise BackendError(f"the boost-headers package has no headers under {boost}: "
                           "pip install --force-reinstall boost-headers")
    for tool in ("g++", "cmake", "make"):
        if shutil.which(tool) is None:
            raise BackendError(f"compiling NESTML models needs '{tool}' on the PATH "
                               "(Debian: apt-get install g++ cmake make)")
    tdir = (root or nestml_cache_root()) / f"toolchain-nest{_version('nest-simulator')}"
    (tdir / "bin").mkdir(parents=True, exist_ok=True)
    (tdir / "include").mkdir(parents=True, exist_ok=True)
    includes = f"-I{nest_dir}/include/nest -I{nest_dir}/include -I{boost} -I{tdir}/include"
    script = f"""#!/bin/sh
# nest-config stand-in for the nest-simulator wheel (written by biosnn)
case "$1" in
  --compiler) echo g++ ;;
  --prefix) echo "{nest_dir}" ;;
  --cflags) echo "-std=c++20 -O2 -fPIC -fopenmp -D_GLIBCXX_USE_CXX11_ABI=0" ;;
  --includes) echo "{includes}" ;;
  --libs) echo "-L{nest_dir} -l:nestkernel_api.so -fopenmp" ;;
  --libdir) echo "{nest_dir}/lib" ;;
  --static-libraries) echo "" ;;
  --version) echo "{_version('nest-simulator')}" ;;
  *) echo "" ;;
esac
"""
    _write_if_changed(tdir / "bin" / "nest-config", script, mode=0o755)
    _write_if_changed(tdir / "include" / "ltdl.h", _LTDL_STUB)
    return tdir


def _source_build_prefix(nest_dir: Path) -> Path | None:
    """Install prefix of a NEST built from source (``<prefix>/bin/nest-config`` exists), else ``None``.

    PyNEST of a source build lives in ``<prefix>/lib/pythonX.Y/site-packages/nest``, next to
    ``<prefix>/bin/nest-config`` and the headers in ``<prefix>/include/nest``.  The PyPI wheel
    also puts a ``nest-config`` into the environment's ``bin``, but it points at the wheel's
    temporary build directory and there are no headers under ``include/nest``.
    """
    prefix = nest_dir.parents[3] if len(nest_dir.parents) > 3 else None
    if prefix is None or not (prefix / "bin" / "nest-config").is_file():
        return None
    return prefix if (prefix / "include" / "nest").is_dir() else None


def _write_if_changed(path: Path, text: str, mode: int | None = None):
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tmp.write_text(text)
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(path)


def module_key(texts: dict[str, str], options: dict) -> str:
    """Hash of the NESTML texts, the code generator options and the NEST / NESTML versions."""
    h = hashlib.sha256()
    for name in sorted(texts):
        h.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
    h.update(repr(sorted(options.items())).encode())
    h.update(_version("nest-simulator").encode() + _version("nestml").encode())
    prefix = _source_build_prefix(_site_dir("nest"))
    if prefix is not None:  # a NEST built from source (MPI) needs its own modules; wheel keys stay as they were
        h.update(str(prefix).encode())
    return h.hexdigest()[:12]


#: NESTML's synapse template treats the connection delay as *dendritic*: a presynaptic spike stamped t is
#: paired with the postsynaptic spikes stamped up to t - delay, each handled at its stamp + delay.  biosnn's
#: plastic connections have the minimal delay (one step) and pair at the spike's arrival, with no dendritic
#: part (postsynaptic spikes up to t, each handled at its stamp): the generated C++ takes the step off
#: before the build.  A template without exactly this line fails the build with a message.
DENDRITIC_DELAY_LINE = "const double __dendritic_delay = get_delay();"
DENDRITIC_DELAY_PATCH = "const double __dendritic_delay = get_delay() - nest::Time::get_resolution().get_ms();"

_GENERATE = """
import json, sys
from pathlib import Path
from pynestml.codegeneration.nest_builder import NESTBuilder
from pynestml.frontend.pynestml_frontend import generate_nest_target
_build = NESTBuilder.build
def build(self):
    for header in Path(sys.argv[2]).glob("*.h"):
        text = header.read_text()
        if "__dendritic_delay" in text:
            if text.count(LINE) != 1:
                sys.exit("biosnn: NESTML's synapse template changed: not one " + repr(LINE) + " in " + header.name)
            header.write_text(text.replace(LINE, PATCH))
    _build(self)
NESTBuilder.build = build
generate_nest_target(input_path=sys.argv[1], target_path=sys.argv[2], install_path=sys.argv[3],
                     module_name=sys.argv[4], logging_level="WARNING",
                     codegen_opts={"nest_path": sys.argv[5], "numeric_solver": sys.argv[6],
                                   **json.loads(sys.argv[7])})
""".replace("LINE", repr(DENDRITIC_DELAY_LINE)).replace("PATCH", repr(DENDRITIC_DELAY_PATCH))


def compile_module(texts: dict[str, str], *, numeric_solver: str = "forward-Euler",
                   cache_root: Path | None = None, timeout_s: float = 900,
                   codegen_opts: dict | None = None) -> tuple[str, Path, bool]:
    """Generate and compile NESTML neuron (and synapse) models into one NEST module, or reuse a cached one.

    Parameters
    ----------
    texts : dict of str to str
        NESTML model name (``model <name>:``) to model text.
    numeric_solver : str
        NESTML's solver for ODEs without an analytic solution (``"forward-Euler"``
        needs no GSL headers; ``"rk45"`` needs Debian's ``libgsl-dev``).
    codegen_opts : dict, optional
        Further NESTML code generator options (JSON values), e.g. the
        ``neuron_synapse_pairs`` of :func:`biosnn.backends.nestml_synapses.codegen_options`.
    cache_root : Path, optional
        Cache directory (default :func:`nestml_cache_root`).
    timeout_s : float
        Limit for generation plus compilation (seconds).

    Returns
    -------
    (module name, install directory, compiled now)

    Raises
    ------
    BackendError
        When NESTML reports errors in a model (the error lines are quoted) or the
        C++ build fails (the end of the build log is quoted).
    """
    root = cache_root or nestml_cache_root()
    extra = json.dumps(codegen_opts or {}, sort_keys=True)
    paired = {"codegen": extra, "patch": DENDRITIC_DELAY_PATCH} if codegen_opts else {}
    key = module_key(texts, {"numeric_solver": numeric_solver, **paired})
    module = f"biosnn{key}module"
    install = root / "modules" / key
    if (install / f"{module}.so").exists():
        return module, install, False
    _site_dir("pynestml")
    tool = toolchain_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"build-{key}-", dir=root))
    try:
        src = work / "models"
        src.mkdir()
        for name, text in texts.items():
            (src / f"{name}.nestml").write_text(text)
        tmp_install = work / "install"
        env = dict(os.environ)
        env["PATH"] = f"{tool / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            proc = subprocess.run([sys.executable, "-c", _GENERATE, str(src), str(work / "target"),
                                   str(tmp_install), module, str(tool), numeric_solver, extra],
                                  capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BackendError(f"compiling the NESTML models {sorted(texts)} took longer than "
                               f"{timeout_s:.0f} s") from None
        log = proc.stdout + proc.stderr
        (work / "nestml.log").write_text(log)
        built = tmp_install / f"{module}.so"
        if not built.exists() or _nestml_errors(log):
            raise BackendError(_explain_failure(texts, log))
        install.parent.mkdir(parents=True, exist_ok=True)
        if not (install / f"{module}.so").exists():
            staging = install.with_name(f"{key}.{os.getpid()}.tmp")
            shutil.copytree(tmp_install, staging, dirs_exist_ok=True)
            for name, text in texts.items():
                (staging / f"{name}.nestml").write_text(text)
            try:
                staging.rename(install)
            except OSError:  # another process installed the same module meanwhile
                shutil.rmtree(staging, ignore_errors=True)
        return module, install, True
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _nestml_errors(log: str) -> list[str]:
    return [ln.strip() for ln in log.splitlines() if ", ERROR, " in ln or "contains errors" in ln]


def _explain_failure(texts: dict[str, str], log: str) -> str:
    errors = _nestml_errors(log)
    if errors:
        return (f"NESTML rejected the translated model(s) {sorted(texts)}:\n  " + "\n  ".join(errors[:12])
                + "\nThe NESTML text was:\n" + "\n".join(texts.values()))
    tail = "\n".join(log.strip().splitlines()[-25:])
    return f"building the NESTML module for {sorted(texts)} failed; end of the build log:\n{tail}"


def install_modules(modules: list[tuple[str, Path]]):
    """``nest.Install`` compiled modules into the current NEST kernel.

    Must be called again after every ``nest.ResetKernel()`` (which unloads the
    models); modules whose models the kernel already knows are skipped.

    Parameters
    ----------
    modules : list of (module name, install directory)
    """
    import nest
    for module, directory in modules:
        path = str(directory)
        parts = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
        if path not in parts:
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([path] + [p for p in parts if p])
        try:
            nest.Install(module)
        except Exception as exc:  # NEST raises its own kernel exceptions
            if "already" in str(exc).lower():
                continue
            raise BackendError(f"NEST could not load the compiled NESTML module '{module}' from "
                               f"{path}: {exc}") from None
