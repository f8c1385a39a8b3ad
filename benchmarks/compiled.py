"""The data plane as pure Python vs compiled (Cython 3, pure-Python mode; mypyc), side by side.

    .venv/bin/python benchmarks/compiled.py [--compilers cython,mypyc] [--modules GLOBS]
        [--requests 2000] [--rounds 3] [--ab-rounds 3] [--duration 6]
        [--no-callgrind] [--no-ab] [--build-only DIR]

Would compiling killgate's hot modules bring its CPU per request near nginx's? The .py files
stay the only source: for every build the working tree's `gateway/` is copied into a
temporary directory and the chosen modules are compiled there, in place (`cythonize` of the
.py files themselves, or `mypyc` on them); every compiled module is then checked to import
as an extension module (Python prefers an extension module to a .py file of the same name).
Nothing compiled is written to the working tree. Each build runs as `python -P -m gateway`
with PYTHONPATH set to its copy, the "pure" build from a plain copy, so the sides differ
only in the compiled modules. Then, in one run:

1. instructions per request (callgrind: the count does not move with the machine's load):
   each build a real `killgate serve` (1 worker) under valgrind, measured as
   `benchmarks/instructions.py` measures its `off` variant (the default configuration):
   `--requests` POSTs over one keep-alive connection per round, the idle rate subtracted;
2. CPU µs per request and req/s against nginx, the sides alternated in every round as
   `benchmarks/ab.py` runs them (c=64, 0 ms backend, 1 worker pinned to CPU 0, wrk).

`--build-only DIR` builds the copies under DIR and stops, to run the tests against one:
`cd DIR/cython && PYTHONPATH=$PWD ../../.venv/bin/python -m pytest tests/test_protocol.py`
(the copy is the whole working tree, tests included, so pytest and `python -m gateway` in
subprocesses import the copy's `gateway`, not the working tree's).

Needs gcc and the Python headers; Cython for `cython` (`pip install -e '.[bench]'`), mypy's
mypyc (the `dev` extra) for `mypyc`; valgrind and redis-server for 1; wrk and nginx for 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _procs import Procs, free_port, start_backend, wait_http
from ab import WRK_SCRIPT, one
from instructions import Gateway, Mute, config, measure, start_redis

ROOT = Path(__file__).resolve().parent.parent
# the modules a proxied request runs through (the data plane and the request's telemetry)
MODULES = "gateway/dataplane/*.py,gateway/telemetry/record.py,gateway/telemetry/requests.py"
COMPILERS = ("cython", "mypyc")
# what mypyc refuses or breaks as the source stands (RESULTS §63; Cython compiles all of
# MODULES): request.py (ClientGone subclasses ConnectionError: "inheriting from most builtin
# types is unimplemented"), jsonpeek.py (a surrogate code point in a string literal),
# slowpath.py (an async generator), telemetry/record.py (NewRecord's `__init__ =
# object.__init__` under a base whose __init__ takes an argument: mypyc's C does not
# compile), telemetry/requests.py (RequestStats: telemetry/grouprender's _GroupStats, an
# interpreted subclass, "cannot inherit from compiled")
MYPYC_SKIP = ("request", "jsonpeek", "slowpath", "record", "requests")
CYTHON_BUILD = """\
import sys
from Cython.Build import cythonize
from setuptools import setup
setup(name="killgate-compiled", script_args=["build_ext", "--inplace", "-j", "2"],
      ext_modules=cythonize(sys.argv[1:], nthreads=2, quiet=True,
                            compiler_directives={"language_level": 3}))
"""


@dataclass
class Build:
    name: str  # "pure", "cython" or "mypyc"
    tree: Path
    modules: list[str] = field(default_factory=list)  # dotted names compiled
    seconds: float = 0.0
    ir: list[float] = field(default_factory=list)  # Ir/request per round
    ab: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def exe(self) -> Path:
        return self.tree / "killgate"


def copy_tree(dest: Path) -> None:
    """The working tree (a few MB: the package, tests, docs, configs, pyproject.toml with
    mypy's settings) into `dest`, without anything built, cached or installed."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "venv", "out", "__pycache__", "*.so", "*.c", "build", "*.egg-info",
        ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"))


def sources(tree: Path, globs: str, skip: tuple[str, ...] = ()) -> list[str]:
    found = sorted({str(p.relative_to(tree)) for g in globs.split(",") for p in tree.glob(g)
                    if p.name != "__init__.py" and p.stem not in skip})
    if not found:
        raise SystemExit(f"--modules {globs!r} names no module")
    return found


def compile_tree(build: Build, files: list[str], log: Path) -> None:
    """Compile `files` (paths under the copy) in place; SystemExit with the log's tail if
    the compiler fails."""
    if build.name == "cython":
        argv = [sys.executable, "-c", CYTHON_BUILD, *files]
    else:
        argv = [sys.executable, "-m", "mypyc", *files]
    t0 = time.monotonic()
    with open(log, "wb") as f:
        done = subprocess.run(argv, cwd=build.tree, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONPATH=str(build.tree)))
    build.seconds = time.monotonic() - t0
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise SystemExit(f"{build.name} failed to compile ({log}):\n" + "\n".join(tail))
    build.modules = [f[:-3].replace("/", ".") for f in files]


def check_imports(build: Build) -> None:
    """Every module meant to be compiled imports from an extension module in the copy."""
    probe = ("import importlib, sys\n"
             "for m in sys.argv[1:]:\n"
             "    print(m, importlib.import_module(m).__file__)\n")
    out = subprocess.run([sys.executable, "-P", "-c", probe, *build.modules], text=True,
                         capture_output=True, env=dict(os.environ, PYTHONPATH=str(build.tree)))
    if out.returncode != 0:
        raise SystemExit(f"{build.name}: the compiled copy does not import:\n{out.stderr[-3000:]}")
    wrong = [line for line in out.stdout.splitlines()
             if not line.endswith((".so", ".pyd")) or str(build.tree) not in line]
    if wrong:
        raise SystemExit(f"{build.name}: not imported from the compiled copy: {wrong}")


def launcher(build: Build) -> None:
    """`tree/killgate`: the copy's gateway with this interpreter (ab.py runs executables)."""
    build.exe.write_text(f"#!/bin/sh\nPYTHONPATH={build.tree} exec {sys.executable} -P "
                         '-m gateway "$@"\n')
    build.exe.chmod(0o755)


def prepare(root: Path, compilers: list[str], globs: str, prebuilt: bool = False,
            skip: tuple[str, ...] = MYPYC_SKIP) -> list[Build]:
    builds = [Build("pure", root / "pure")] + [Build(c, root / c) for c in compilers]
    if prebuilt:  # copies a --build-only run left: what is compiled there is what runs
        for b in builds:
            b.modules = sorted(str(p.relative_to(b.tree)).split(".")[0].replace("/", ".")
                               for p in (b.tree / "gateway").rglob("*.so"))
            if b.name != "pure":
                check_imports(b)
        return builds
    for b in builds:
        copy_tree(b.tree)
        launcher(b)
        if b.name != "pure":
            files = sources(b.tree, globs, skip if b.name == "mypyc" else ())
            print(f"compiling {len(files)} modules with {b.name} ...", file=sys.stderr,
                  flush=True)
            compile_tree(b, files, root / f"{b.name}-build.log")
            check_imports(b)
            print(f"  {b.name}: {len(b.modules)} modules in {b.seconds:.0f} s", file=sys.stderr,
                  flush=True)
    return builds


def callgrind(builds: list[Build], args: argparse.Namespace, root: Path, procs: Procs,
              backend: int) -> None:
    redis = start_redis(procs, root / "redis.log")
    sink = free_port()  # (instructions.measure asks it for spans; none are sent: tracing off)
    procs.start([sys.executable, str(Path(__file__).with_name("otlp_sink.py")), "--port",
                 str(sink)], root / "sink.log")
    wait_http(f"http://127.0.0.1:{sink}/")
    mute = Mute()  # (instructions.measure holds one exchange in flight to it, as its rounds do)
    try:
        _callgrind(builds, args, root, procs, backend, sink, redis, mute)
    finally:
        mute.close()


def _callgrind(builds: list[Build], args: argparse.Namespace, root: Path, procs: Procs,
               backend: int, sink: int, redis: int, mute: Mute) -> None:
    gws: list[tuple[Build, Gateway]] = []
    for b in builds:
        gw = Gateway(b.name, "off", root / f"cg-{b.name}")
        gw.work.mkdir()
        gw.port, gw.admin = free_port(), free_port()
        cfg, env = config(gw, backend, sink, redis, mute.port)
        p = procs.start(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                         f"--callgrind-out-file={gw.work}/callgrind.out", sys.executable, "-P",
                         "-m", "gateway", "serve", "-c", str(cfg)], gw.work / "gateway.log",
                        env=dict(env, PYTHONPATH=str(b.tree)))
        gw.pid = p.pid
        gws.append((b, gw))
    for _, gw in gws:
        wait_http(f"http://127.0.0.1:{gw.admin}/readyz", timeout=900)
    for b, gw in gws:
        measure(gw, args, sink, mute)
        b.ir = [r[0] for r in gw.rows]


def alternate(builds: list[Build], args: argparse.Namespace, root: Path,
              backend: int) -> list[tuple[float, float, float, float]]:
    """ab.py's alternated rounds: nginx, then every build; nginx's results."""
    script = root / "post.lua"
    script.write_text(WRK_SCRIPT)
    root.chmod(0o755)  # nginx workers may run as an unprivileged user
    nginx: list[tuple[float, float, float, float]] = []
    for r in range(args.ab_rounds):
        for name, spec in [("nginx", "nginx")] + [(b.name, str(b.exe)) for b in builds]:
            work = root / f"ab-{name}-{r}"
            work.mkdir()
            work.chmod(0o755)
            got = one(spec, work, backend, args, script)
            (nginx if name == "nginx" else next(b for b in builds if b.name == name).ab).append(got)
            print(f"round {r + 1} {name:>7}: {got[0]:9,.0f} req/s {got[1]:6.1f} µs/req",
                  file=sys.stderr, flush=True)
    return nginx


def report(builds: list[Build], nginx: list[tuple[float, float, float, float]],
           args: argparse.Namespace) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    for b in builds[1:]:
        took = f" in {b.seconds:.0f} s" if b.seconds else " (prebuilt)"
        print(f"{b.name}: {len(b.modules)} modules compiled{took}: "
              + ", ".join(m.removeprefix("gateway.") for m in b.modules))
        if b.name == "mypyc":
            print(f"mypyc: left interpreted (--mypyc-skip): {args.mypyc_skip}")
    parts = ([] if args.no_callgrind else [
        f"callgrind: {args.requests} requests x {args.rounds} rounds over 1 connection, idle "
        "rate subtracted"]) + ([] if args.no_ab else [
        f"alternated with nginx: {args.ab_rounds} rounds, c={args.connections}, "
        f"{args.duration:g} s, 0 ms backend, 1 worker pinned"])
    print("\n" + "; ".join(parts) + "\n")
    print("| build | Ir/request (median) | vs pure | rounds (Ir) | req/s (median) | "
          "CPU µs/req (median) | vs pure | CPU/req vs nginx 1w |")
    print("|---|---|---|---|---|---|---|---|")

    def med(rows: list[tuple[float, float, float, float]], i: int) -> float:
        return statistics.median(r[i] for r in rows) if rows else 0.0

    ngx = med(nginx, 1)
    if nginx:
        print(f"| nginx 1w | | | | {med(nginx, 0):,.0f} | {ngx:.1f} | | 1.00 |")
    pure_ir = statistics.median(builds[0].ir) if builds[0].ir else 0.0
    pure_cpu = med(builds[0].ab, 1)
    for b in builds:
        ir = statistics.median(b.ir) if b.ir else 0.0
        cpu = med(b.ab, 1)
        cells = [f"{ir:,.0f}" if ir else "",
                 f"{ir / pure_ir - 1:+.1%}" if ir and pure_ir else "",
                 " / ".join(f"{x:,.0f}" for x in b.ir),
                 f"{med(b.ab, 0):,.0f}" if b.ab else "", f"{cpu:.1f}" if cpu else "",
                 f"{cpu / pure_cpu - 1:+.1%}" if cpu and pure_cpu else "",
                 f"**{cpu / ngx:.2f}**" if cpu and ngx else ""]
        print(f"| {b.name} | " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compilers", default="cython",
                    help="a comma-separated subset of " + ", ".join(COMPILERS))
    ap.add_argument("--modules", default=MODULES,
                    help="comma-separated globs of the modules to compile (relative to the "
                         "tree; __init__.py files are left alone)")
    ap.add_argument("--mypyc-skip", default=",".join(MYPYC_SKIP),
                    help="comma-separated module names (file stems) mypyc leaves interpreted")
    ap.add_argument("--requests", type=int, default=2000, help="callgrind: POSTs per round")
    ap.add_argument("--rounds", type=int, default=3, help="callgrind rounds")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of each idle measurement")
    ap.add_argument("--ab-rounds", type=int, default=3, help="alternated wrk rounds")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of each wrk run")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-ab", action="store_true")
    ap.add_argument("--build-only", type=Path, default=None, metavar="DIR",
                    help="build the copies under DIR (new or empty) and stop")
    ap.add_argument("--prebuilt", type=Path, default=None, metavar="DIR",
                    help="measure the copies a --build-only run left under DIR (no build)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="keep the callgrind files here (callgrind_annotate shows where the "
                         "instructions go)")
    args = ap.parse_args()
    args.connections, args.settle, args.no_hold = 1, 0.0, False  # (instructions.measure's)
    compilers = [c for c in COMPILERS if c in args.compilers.split(",")]
    skip = tuple(m for m in args.mypyc_skip.split(",") if m)
    needed = [] if args.build_only else (
        ([] if args.no_callgrind else ["valgrind", "callgrind_control", "redis-server",
                                       "redis-cli"]) + ([] if args.no_ab else ["wrk", "nginx"]))
    missing = [t for t in ["gcc", *needed] if shutil.which(t) is None]
    if "cython" in compilers and importlib.util.find_spec("Cython") is None:
        missing.append("Cython (pip install -e '.[bench]')")
    if "mypyc" in compilers and importlib.util.find_spec("mypyc") is None:
        missing.append("mypyc (pip install -e '.[dev]')")
    if missing:
        print(f"benchmarks/compiled.py needs {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.build_only is not None:
        args.build_only.mkdir(parents=True, exist_ok=True)
        prepare(args.build_only.resolve(), compilers, args.modules, skip=skip)
        print(f"built under {args.build_only}: " + ", ".join(["pure", *compilers]))
        return 0
    with tempfile.TemporaryDirectory(prefix="killgate-compiled-") as tmp:
        root = Path(tmp)
        if args.prebuilt is not None:
            builds = prepare(args.prebuilt.resolve(), compilers, args.modules, prebuilt=True)
        else:
            builds = prepare(root, compilers, args.modules, skip=skip)
        procs = Procs()
        nginx: list[tuple[float, float, float, float]] = []
        try:
            backend = start_backend(procs, root / "backend.log", 0.0)
            if not args.no_callgrind:
                cg = Procs()
                try:
                    callgrind(builds, args, root, cg, backend)
                finally:
                    cg.stop()
                    if args.keep is not None:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        for f in root.glob("cg-*/callgrind.out*"):
                            shutil.copy(f, args.keep / f"{f.parent.name[3:]}.{f.name}")
            if not args.no_ab:
                args.connections = 64
                nginx = alternate(builds, args, root, backend)
        finally:
            procs.stop()
        report(builds, nginx, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
