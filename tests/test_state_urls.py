"""The redis store through Redis Sentinel and through TLS (rediss://), against real servers."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.backends import echo_app
from tests.conftest import (
    die_with_parent,
    free_port,
    running_gateway,
    two_versions,
    wait_until_sync,
    write_config,
)
from tests.test_killswitch import kill, status_of, unkill


def _redis(args: list[str], port: int, tls: bool = False,
           password: str | None = None) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not on PATH"
    proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=die_with_parent)
    cli = shutil.which("redis-cli")

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {proc.returncode}")
        cmd = [cli or "redis-cli", "-p", str(port)] + (["--tls", "--insecure"] if tls else [])
        cmd += ["--no-auth-warning", "-a", password] if password else []
        res = subprocess.run([*cmd, "PING"], capture_output=True, text=True, timeout=5)
        return "PONG" in res.stdout

    wait_until_sync(up, 10, what="redis to answer")
    return proc


async def _kill_and_unkill(cfg: Path, session) -> None:
    async with running_gateway(cfg) as g:
        assert g.gw.sync.connected
        await kill(session, g.admin, scope="route", route="iris")
        assert (await status_of(session, g.url))[0] == 503
        await unkill(session, g.admin, scope="route", route="iris")
        assert (await status_of(session, g.url))[0] == 200


def _cli(*args: str) -> str:
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True,
                          timeout=5).stdout.strip()


def _state(url: str, tmp: Path) -> str:
    return (f"state:\n  backend: redis\n  url: \"{url}\"\n  prefix: kgurl\n"
            f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
            f"  snapshot_path: {tmp}/snap.json\n  poll_interval: 100ms\n")


async def test_sentinel_url(tmp_path: Path, backends, session, redis_server) -> None:
    sport = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sport}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor kgmaster 127.0.0.1 {redis_server.port} 1\n"
                    "sentinel down-after-milliseconds kgmaster 5000\n")
    sentinel = _redis([str(conf), "--sentinel"], sport)
    try:
        p = await backends(echo_app("v1"))
        url = f"redis+sentinel://127.0.0.1:{sport}/kgmaster/0"
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=_state(url, tmp_path))
        async with running_gateway(cfg) as g:
            assert g.gw.sync.connected
            await kill(session, g.admin, scope="route", route="iris")
            assert (await status_of(session, g.url))[0] == 503
            assert "route:iris" in redis_server.cmd("GET", "kgurl:state")  # on the master
            await unkill(session, g.admin, scope="route", route="iris")
    finally:
        sentinel.terminate()
        sentinel.wait(10)


def _certs(tmp: Path) -> tuple[Path, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_p, key_p = tmp / "redis.crt", tmp / "redis.key"
    cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_p.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cert_p, key_p, cert_p


async def test_rediss_url(tmp_path: Path, backends, session) -> None:
    cert, key, ca = _certs(tmp_path)
    port = free_port()
    server = _redis(["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                     "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                     "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                     "--save", "", "--appendonly", "no"], port, tls=True)
    try:
        p = await backends(echo_app("v1"))
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=_state(url, tmp_path))
        await _kill_and_unkill(cfg, session)
    finally:
        server.terminate()
        server.wait(10)


async def test_unix_socket_with_password(tmp_path: Path, backends, session) -> None:
    sock = tmp_path / "r.sock"
    port = free_port()
    server = _redis(["--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(sock),
                     "--requirepass", "s3cret pass", "--save", "", "--appendonly", "no"], port,
                    password="s3cret pass")
    try:
        p = await backends(echo_app("v1"))
        url = f"unix://:s3cret%20pass@{sock}?db=3"
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=_state(url, tmp_path))
        await _kill_and_unkill(cfg, session)
        assert _cli("-s", str(sock), "--no-auth-warning", "-a", "s3cret pass", "-n", "3",
                    "EXISTS", "kgurl:state") == "1"  # in the database the URL names
    finally:
        server.terminate()
        server.wait(10)


async def test_wrong_password_is_a_clear_error(tmp_path: Path, backends, session) -> None:
    port = free_port()
    server = _redis(["--port", str(port), "--bind", "127.0.0.1", "--requirepass", "right",
                     "--save", "", "--appendonly", "no"], port, password="right")
    try:
        p = await backends(echo_app("v1"))
        url = f"redis://:wrong@127.0.0.1:{port}/0"
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=_state(url, tmp_path))
        async with running_gateway(cfg) as g:
            err = g.gw.sync.last_error or ""
            assert not g.gw.sync.connected
            assert "refused the connection" in err and "WRONGPASS" in err, err
            # no sync and no snapshot: the kill state is unknown, so nothing is routed
            assert await status_of(session, g.url) == (503, "fallback")  # state_unknown
    finally:
        server.terminate()
        server.wait(10)
