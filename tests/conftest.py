"""Shared fixtures: loopback backends, in-process and subprocess gateways, redis-server.

Everything binds 127.0.0.1 on a free port; everything a fixture starts, it stops.
Synchronisation is by polling with a deadline (`wait_until`), never fixed sleeps.
"""

from __future__ import annotations

import sys

if sys.dont_write_bytecode:  # (PYTHONDONTWRITEBYTECODE, set where the suite runs)
    # Every `killgate serve` / `python -m gateway` a test starts (hundreds in a run) compiled
    # ~290 modules from source, ~0.4 s of CPU each, and each xdist worker compiled and
    # assert-rewrote ~400 test modules at collection (~12 s of CPU each); with the caches
    # written once they are read back. Only this checkout's own __pycache__ folders
    # (gitignored, .dockerignored); the variable still reaches the processes tests start,
    # which read the caches and write none.
    import compileall
    from pathlib import Path as _Path

    compileall.compile_dir(_Path(__file__).resolve().parent.parent / "gateway", quiet=2)
    sys.dont_write_bytecode = False  # (pytest's rewritten test modules, the helpers here)

import asyncio
import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar, cast

import hiredis
import pytest
from aiohttp import ClientSession, web

from gateway.app import Gateway
from gateway.configfile import load_config
from tests import cli_fork_serve
from tests.backends import serve_app
from tests.faultproxy import Forwarder
from tests.hangguard import (  # noqa: F401  (hooks: a hung test ends its process, not the run)
    pytest_configure,
    pytest_exception_interact,
    pytest_runtest_protocol,
    pytest_timeout_set_timer,
)

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """The container image test's build starts now, in the background (tests/imagebuild.py;
    before xdist's workers start, which inherit where to find it)."""
    from tests import imagebuild

    imagebuild.start(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A background image build still running is stopped, an image no test took removed."""
    if not hasattr(config, "workerinput"):
        from tests import imagebuild

        imagebuild.finish()
SECRET = "test-secret-0123456789-abcdefghijklmnop"
#: the state signing key every test gateway with a redis store uses (state.signing_key_env)
STATE_KEY = "test-state-key-0123456789-abcdefghijklmnop"
STATE_KEY_ENV = "KILLGATE_TEST_STATE_KEY"


def admin_token(scope: str, sub: str = "alice", ttl: float = 600) -> str:
    """A token the test gateways accept: HS256 with SECRET, killgate's issuer and audience."""
    from gateway.admin.tokens import mint

    return mint(SECRET, sub, scope, ttl, "killgate", "killgate-admin")


def bearer(scope: str, sub: str = "alice", ttl: float = 600) -> dict[str, str]:
    """The Authorization header carrying `admin_token(scope, sub, ttl)`."""
    return {"Authorization": f"Bearer {admin_token(scope, sub, ttl)}"}


def signed_ack(prefix: str, instance: str, generation: int, key: str = STATE_KEY) -> str:
    """An ack (heartbeat) as a gateway holding `key` publishes it on `<prefix>:acks`."""
    from gateway.state.signing import Key, Keyring

    keys = Keyring(Key.of(key.encode()), context=prefix)
    wall = str(int(time.time() * 1000))
    kid, mac = keys.sign(b"ack", f"{instance}\x00{generation}\x00{wall}\x00-".encode())
    return f"{kid} {mac} {generation} {wall} - {instance}"


T = TypeVar("T")


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def rss_growth(pid: int, work: Awaitable[T]) -> tuple[T | Exception, float]:
    """What `work` gave (or the exception that ended it) and how far process `pid`'s
    resident memory rose above its start meanwhile, MiB (sampled every 50 ms)."""
    before = peak = rss_kib(pid)
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.05)
    try:
        got: T | Exception = task.result()
    except Exception as exc:  # noqa: BLE001 - the caller looks at it
        got = exc
    return got, (peak - before) / 1024


#: where free_port() looks: below Linux's ephemeral range (32768-60999 by default), from
#: which the kernel takes the local port of every outgoing connection and of every bind to
#: port 0. A port found free there could be taken by any connection the machine opens (a
#: suite opens thousands) before the server the test starts binds it; down here only
#: another free_port() could take it, and 12,000 ports make that unlikely.
_PORTS = range(20000, 32768)


_GIVEN: set[int] = set()  # ports free_port handed out in this process: never twice


def free_port() -> int:
    """A loopback port nobody listens on now, for a server a test starts later (a
    subprocess with its port in a config file) or for a port that must refuse. Never one
    it gave before in this process (two calls in one config once drew the same port)."""
    import random

    for _ in range(200):
        port = random.choice(_PORTS)
        if port in _GIVEN:
            continue
        _GIVEN.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # (that range is full: let the kernel choose)
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005,
                     what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        res = pred()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return res
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_sync(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
                    what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        res = pred()
        if res:
            return res
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_config(tmp: Path, routes: str, *, state: str | None = None, extra: str = "",
                 listen: str = "127.0.0.1:0", admin: str = "127.0.0.1:0",
                 name: str = "killgate.yaml") -> Path:
    state = state or textwrap.dedent(f"""\
        state:
          backend: local
          path: {tmp}/store.json
          snapshot_path: {tmp}/snapshot.json
          poll_interval: 50ms
        """)
    text = (f"listen: {listen}\nadmin:\n  listen: {admin}\n  auth:\n"
            f"    hs256_secret_env: KILLGATE_TEST_SECRET\n"
            + state + extra + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  "))
    p = tmp / name
    p.write_text(text)
    p.chmod(0o600)  # (a config others may write is refused: not left to the umask)
    return p


def two_versions(p1: int, p2: int, w1: float = 90, w2: float = 10, extra: str = "",
                 name: str = "iris", prefix: str = "/v2/models/iris") -> str:
    return textwrap.dedent(f"""\
        - name: {name}
          match: {{path_prefix: {prefix}}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: {w1}}}
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {w2}}}
        """) + textwrap.indent(textwrap.dedent(extra), "  ")


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILLGATE_TEST_SECRET", SECRET)
    monkeypatch.setenv(STATE_KEY_ENV, STATE_KEY)


@pytest.fixture(autouse=True)
def _spawned_closed() -> Iterator[None]:
    """At the end of each test, every `killgate` it spawned (tests/cli_fork_spawn.spawn) and did
    not read to its end is killed and its pipes closed: a test that failed before its
    communicate() left them to the garbage collector, whose ResourceWarning then failed an
    innocent later test (filterwarnings = error)."""
    yield
    from tests import cli_fork_spawn

    cli_fork_spawn.close_all()


@pytest.fixture(autouse=True)
def _dump_tasks_on_hang(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before pytest-timeout kills a hung test, print what every asyncio task awaits."""
    import gc
    import threading

    done = threading.Event()

    def watch() -> None:
        if done.wait(50):
            return
        print(f"\n=== {request.node.nodeid} still running after 50 s; asyncio tasks:",
              file=sys.stderr)
        loops = [o for o in gc.get_objects()
                 if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
        for loop in loops:
            try:
                for t in list(asyncio.all_tasks(loop)):
                    t.print_stack(limit=6, file=sys.stderr)
            except RuntimeError:
                pass

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    yield
    done.set()


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[web.Application], Awaitable[int]]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> int:
        runner, port = await serve_app(app)
        runners.append(runner)
        return port

    yield start
    for r in reversed(runners):
        await r.cleanup()


class InProcess:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        assert gw.data_addr and gw.admin_addr
        self.url = f"http://127.0.0.1:{gw.data_addr[1]}"
        self.admin = f"http://127.0.0.1:{gw.admin_addr[1]}"


_nesting: list[Gateway] = []  # in-process gateways running now (a test may nest them)
_watched: list[Gateway] = []  # started since the outermost one: checked when it stops
_watched_servers: set[object] = set()
_GATEWAY_SRC = str(Path(__file__).resolve().parent.parent / "gateway")


def _gateway_tasks(servers: set[object]) -> list[asyncio.Task[Any]]:
    """Tasks running gateway code: its own coroutines, and aiohttp's connection handlers
    of its listeners (backends in the test process have handlers too: not counted)."""
    out = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is None:
            continue
        mine = frame.f_code.co_filename.startswith(_GATEWAY_SRC)
        if mine or getattr(frame.f_locals.get("self"), "_manager", None) in servers:
            out.append(task)
    return out


def _gateway_sockets(ports: set[int]) -> int:
    """Our process's TCP sockets with a local port of the gateway's listeners (the
    listeners and the connections they accepted), asked of each socket descriptor of ours
    (getsockname on a copy): /proc/self/net/tcp lists every socket of the machine's network
    namespace, thousands in TIME_WAIT while the suite runs, 20-60 ms a read, two reads at
    each in-process gateway's stop (of ~0.12 s in all, ~860 gateways)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:["):
                continue
            copy = os.dup(int(fd))
        except OSError:
            continue  # (closed meanwhile: the listing's own descriptor, say)
        try:
            s = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)
            continue
        with s:
            if s.family not in (socket.AF_INET, socket.AF_INET6) or s.type != socket.SOCK_STREAM:
                continue
            with suppress(OSError):
                n += s.getsockname()[1] in ports
    return n


@asynccontextmanager
async def running_gateway(path: Path, instance: str = "test") -> AsyncIterator[InProcess]:
    """An in-process gateway. After it stops (RELIABILITY §5 leak checks): no request in
    flight, every backend pool closed, no task running its code or serving its listeners,
    and no socket left on its ports. A fault that leaks fails the test that provoked it.
    Gateways nested in one test are checked together when the outermost stops (gateway
    code running then could be any of theirs)."""
    gw = Gateway(load_config(path), instance)
    _nesting.append(gw)
    try:
        await gw.start()
        for runner in (gw._admin_runner,):
            if runner is not None and runner.server is not None:
                _watched_servers.add(runner.server)
        _watched.append(gw)
        yield InProcess(gw)
    finally:
        try:
            await gw.shutdown()
        finally:
            _nesting.remove(gw)
            gateways, servers = list(_watched), set(_watched_servers)
            if not _nesting:  # (also when the test failed: the next one starts clean)
                _watched.clear()
                _watched_servers.clear()
    if _nesting:
        return
    ports = {a[1] for g in gateways for a in (g.data_addr, g.admin_addr) if a is not None}

    def pools_open() -> int:
        return sum(p.open for g in gateways for p in g.upstreams.pools.values())

    def clean() -> bool:
        return not _gateway_tasks(servers) and not _gateway_sockets(ports) and not pools_open()

    with suppress(AssertionError):  # closing sockets take a loop turn or two
        await wait_until(clean, 5, 0.02)
    assert all(g.inflight.count == 0 for g in gateways)
    assert not _gateway_tasks(servers), (f"tasks left running after the gateway stopped: "
                                         f"{_gateway_tasks(servers)}")
    assert not _gateway_sockets(ports), "sockets left open on the gateway's ports"
    assert not pools_open(), "backend connections left open"


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as s:
        yield s


# --------------------------------------------------------------------------- subprocesses


def die_with_parent() -> None:
    """preexec_fn: the child is killed when the test run dies (pytest-timeout ends a hung
    run with os._exit, and teardown never runs), so no test leaves a process behind."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class GatewayProcess:
    """A real `killgate serve` subprocess; stopped (SIGTERM, then SIGKILL) by the test."""

    def __init__(self, config: Path, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.config = config
        cfg = load_config(config).config
        self.data_port = int(cfg.listen.rsplit(":", 1)[1])
        self.admin_port = int(cfg.admin.listen.rsplit(":", 1)[1])
        self.log = config.parent / f"gateway-{self.data_port}.log"
        e = dict(os.environ)
        e.update(env or {})
        e["PYTHONUNBUFFERED"] = "1"
        self._logf = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        argv = ["serve", "-c", str(config), "--workers", str(workers)]
        self.proc: subprocess.Popen[bytes] | cli_fork_serve.Started
        if os.environ.get("KILLGATE_TEST_FORK_SERVE"):
            # forked from a process that imported the gateway already (tests/cli_fork.py:
            # a fresh interpreter spent ~0.7 s of CPU importing before serve began). Off by
            # default: in 3 of 5 clean-clone CI runs (stop 39) forked serves left unclosed
            # files (test_revroll3's unraisable ResourceWarnings) and outran rigs that did
            # not wait for their backends; and the suite's wall time did not drop (15:22
            # forked against 15:08 exec'd)
            self.proc = cli_fork_serve.start(argv, e, str(ROOT), self._logf.fileno())
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", *argv],
                stdout=self._logf, stderr=subprocess.STDOUT, env=e, cwd=str(ROOT),
                start_new_session=True, preexec_fn=die_with_parent)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.data_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0, count: int = 1) -> None:
        """Until /readyz answers 200 (or the process exits: an error at once) and `count`
        processes have said they listen (a group's /readyz is answered by whichever worker
        is up: pass its size for every worker). 60 s: a positive signal costs nothing when
        it comes, and a loaded CI machine took 10-13 s to bring up a two-worker group (15 s
        failed test_workers once)."""
        import urllib.request

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            if count > 1 and len(self.listening()) < count:
                return False
            try:
                with urllib.request.urlopen(f"{self.admin}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until_sync(ready, timeout, what=f"gateway ready on {self.admin}")

    def listening(self) -> set[int]:
        """The pids that have logged their `listening` phase (a group: one per worker start;
        the text log format, and JSON's)."""
        return {int(m.group(1)) for m in re.finditer(
            r'phase"?[=:] ?"listening".*?"?pid"?[=:] ?(\d+)', self.output())}

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._logf.close()
        return self.proc.wait(0)


@pytest.fixture
def gateway_procs() -> Iterator[Callable[..., GatewayProcess]]:
    procs: list[GatewayProcess] = []
    cli_fork_serve.started()  # (the fork server, started here rather than in the test's loop)

    def start(config: Path, workers: int = 1, env: dict[str, str] | None = None) -> GatewayProcess:
        p = GatewayProcess(config, workers, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait(5)
        if not p._logf.closed:
            p._logf.close()


async def serving_process(start: Callable[..., GatewayProcess], tmp_path: Path,
                          routes: str) -> tuple[GatewayProcess, int]:
    """A `killgate serve` process (from the `gateway_procs` fixture's `start`) for `routes`
    on a fresh data port, ready; with that port."""
    data = free_port()
    cfg = write_config(tmp_path, routes, listen=f"127.0.0.1:{data}",
                       admin=f"127.0.0.1:{free_port()}")
    gw = start(cfg)
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    return gw, data


# --------------------------------------------------------------------------- redis-server


def _read_reply(sock: socket.socket) -> bytes:
    """One whole RESP2 reply from `sock` (its raw bytes)."""
    buf = bytearray()

    def need(n: int) -> None:
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection mid-reply")
            buf.extend(chunk)

    def line_end(pos: int) -> int:
        while (end := buf.find(b"\r\n", pos)) < 0:
            need(len(buf) + 1)
        return end

    def skip(pos: int) -> int:  # the position after the reply that starts at `pos`
        need(pos + 1)
        end = line_end(pos)
        kind, n = buf[pos:pos + 1], buf[pos + 1:end]
        if kind == b"$":
            size = int(n)
            if size < 0:
                return end + 2
            need(end + 2 + size + 2)
            return end + 2 + size + 2
        if kind == b"*":
            pos = end + 2
            for _ in range(max(int(n), 0)):
                pos = skip(pos)
            return pos
        return end + 2

    end = skip(0)
    return bytes(buf[:end])


class _PortTaken(Exception):
    """Another process holds the port a server of ours was to listen on."""


class RedisServer:
    """Our own redis-server on a free loopback port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not on PATH (apt-get install -y redis-server)")
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it on its port and wait until it answers. The port was free when it was
        chosen; if something took it since, redis-server exits (bind failed) or another
        server answers there: on a first start, a new port is chosen (three tries)."""
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes",
                 # (a replica's full sync starts at once; by default it waits 5 s for more)
                 "--repl-diskless-sync-delay", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
            try:
                wait_until_sync(self._answers, 10.0,
                                what=f"redis-server to answer on port {self.port}")
                return
            except _PortTaken:
                self.kill()
                if self._started or attempt == 2:
                    raise AssertionError(f"redis-server could not listen on port {self.port}: "
                                         "another process holds it" + (
                                             " (taken while ours was down)" if self._started
                                             else "")) from None
                self.port = free_port()
            finally:
                self._started = self._started or (self.proc.poll() is None)

    _started = False

    def _answers(self) -> bool:
        """Our redis-server answers (the one whose process id INFO names)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise _PortTaken
        try:
            info = self.cmd("INFO", "server")
        except OSError:
            return False
        if info.startswith("LOADING"):
            return False
        if "process_id:" not in info:
            return False  # (still loading)
        if f"process_id:{self.proc.pid}\r\n" not in info:
            raise _PortTaken
        return True

    def cmd(self, *args: str) -> str:
        """One command over a raw socket (the tests' own, independent of redis-py): a
        status, error or integer reply's text, a bulk string's content ("" for none), or
        an array's raw reply text (for `in` checks). The whole reply is read, however
        many segments it comes in."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload)
            data = _read_reply(s)
        line = data.split(b"\r\n", 1)[0].decode()
        if line[:1] in "+-:":
            return line[1:]
        if line[:1] == "$":
            return "" if line == "$-1" else data[len(line) + 2:-2].decode()
        return data.decode(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.kill()
        self.start()

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def _own_redis(workdir: Path) -> Iterator[RedisServer]:
    r = RedisServer(workdir)
    r.start()
    yield r
    if r.proc is not None and r.proc.poll() is None:
        r.thaw()
        r.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _own_redis(tmp_path)


@pytest.fixture
def second_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Another redis-server of our own (a replica, a failover target), stopped after."""
    (tmp_path / "redis2").mkdir()
    yield from _own_redis(tmp_path / "redis2")


@pytest.fixture
async def fwd(redis_server: RedisServer) -> AsyncIterator[Forwarder]:
    """A forwarder in front of `redis_server` (tests/faultproxy.py), closed after."""
    f = Forwarder(redis_server.port)
    await f.start()
    yield f
    await f.close()


#: command name -> the raw RESP reply the server sends to it, or makes of the command's
#: arguments (CLIENT, AUTH, SELECT: +OK)
Answers = dict[bytes, bytes | Callable[[list[bytes]], bytes]]
#: `odd_server`'s starter: the answers -> the server's URL
OddServer = Callable[[Answers], Awaitable[str]]


@pytest.fixture
async def odd_server() -> AsyncIterator[OddServer]:
    """Starts a loopback server answering each command from `answers` (a server that
    speaks RESP but is not redis, a proxy that mangles replies); yields its URL."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def start(answers: Answers) -> str:
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            handlers.add(cast("asyncio.Task[Any]", asyncio.current_task()))
            reader = hiredis.Reader()
            try:
                while chunk := await r.read(65536):
                    reader.feed(chunk)
                    while (cmd := reader.gets()) is not False:
                        answer = answers.get(bytes(cmd[0]).upper(), b"+OK\r\n")
                        w.write(answer if isinstance(answer, bytes) else answer(cmd))
            except (OSError, hiredis.ProtocolError):
                pass
            finally:
                w.transport.abort()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


@pytest.fixture(scope="session")
def _chromium() -> Iterator[list[Any]]:
    """The test process's one Chromium (`browser` starts it at first use), quit at the end."""
    started: list[Any] = []
    yield started
    for b in started:
        with suppress(Exception):
            b.d.quit()


@pytest.fixture(scope="module")
def browser(_chromium: list[Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium for a module of the console's browser tests (tests/console_rig.py's
    `Browser`; selenium is imported only by the modules using it): the process's one, made
    fresh for the module (`Browser.fresh`), or a new one if that one cannot be."""
    from selenium.common.exceptions import WebDriverException

    from tests.chromium import CHROMEDRIVER, CHROMIUM, Browser

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed (apt-get install -y "
                    "chromium chromium-driver; .ci/run does)")
    if _chromium:
        try:
            _chromium[0].fresh()
        except WebDriverException:  # (it died, or an earlier module left it unusable)
            with suppress(Exception):
                _chromium.pop().d.quit()
    if not _chromium:
        _chromium.append(Browser(tmp_path_factory.mktemp("chromium-profile")))
    b = _chromium[0]
    yield b
    with suppress(WebDriverException):
        b.blank()
