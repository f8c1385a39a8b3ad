"""The quick start: `killgate demo` answers through the gateway, and its printed token works."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

from tests.conftest import ROOT, die_with_parent, free_port, wait_until_sync

BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.1,2.8,4.7,1.2]}]}'


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_demo_answers_and_its_token_kills(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port, admin = free_port(), free_port()
    log = tmp_path / "demo.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("KILLGATE_JWT_SECRET", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port),
                                 "--admin-port", str(admin)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
                                start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_until_sync(lambda: "export KILLGATE_TOKEN=" in log.read_text(), 20,
                        what="the demo to print its instructions")
        url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
        seen: Counter[str] = Counter()
        answers = {}
        for _ in range(200):
            status, headers, body = _post(url, BODY)
            assert status == 200
            version = headers["x-killgate-version"]
            seen[version] += 1
            answers[version] = json.loads(body)["parameters"]["labels"]
        assert 3 <= seen["v2"] <= 45  # the 90/10 split: Binomial(200, 0.1) misses 1 in 4 million
        assert answers["v1"] != answers["v2"]  # the two model versions answer differently
        # the stream
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/models/iris/generate_stream",
                data=b'{"n": 3}', method="POST"), timeout=10) as r:
            assert r.read().count(b"data: ") == 4
        token = re.search(r"export KILLGATE_TOKEN=(\S+)", log.read_text()).group(1)
        assert f"http://127.0.0.1:{admin}/ui/" in log.read_text()  # the console's address
        res = subprocess.run([sys.executable, "-m", "gateway", "--admin",
                              f"http://127.0.0.1:{admin}", "--token", token, "kill", "--route",
                              "iris", "--reason", "demo"], capture_output=True, text=True,
                             timeout=30, cwd=str(ROOT))
        assert res.returncode == 0, res.stderr
        status, headers, _ = _post(url, BODY)
        assert status == 503 and headers["x-killgate-decision"] == "killed"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(15)
        assert proc.returncode == 0 and time.monotonic() - t0 < 15
