"""README's "Shadow traffic" tried on the demo, as it says (revnewuser9): "edit the config
file it prints: give iris's v2 `weight: 0` and add `shadow: {version: v2, sample: 1.0}` to
iris", send a few requests, read `killgate shadow report iris`.

The demo's routes declared no `protocol`, so the shadow compared by `json`: every answer
names its `model_version` (v1, v2), so every comparison disagreed, 0 % agreement even on
inputs both versions classify alike. With `protocol: v2` it compares by `v2_tensors` (the
outputs), as the README's shadow example does. A real `killgate demo` process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until_sync
from tests.test_demo import demo_on_free_ports

pytestmark = pytest.mark.timeout(90)

#: an input both demo versions classify as virginica
BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.7,3.0,5.2,2.3]}]}'


def test_the_demo_shadow_as_the_readme_says_compares_the_outputs(tmp_path: Path) -> None:
    with demo_on_free_ports(tmp_path) as text:
        data = re.search(r"data plane  (http://127\.0\.0\.1:\d+)", text).group(1)
        admin = re.search(r"admin  (http://127\.0\.0\.1:\d+)", text).group(1)
        token = re.search(r"export KILLGATE_TOKEN=(\S+)", text).group(1)
        cfg = Path(re.search(r"config      (\S+)", text).group(1))
        doc = cfg.read_text()
        iris, rest = doc.split("  - name: iris-drill", 1)
        iris = re.sub(r"(\{name: v2, [^}]*weight: )10\}", r"\g<1>0}", iris)
        iris = iris.replace("    stable: v1\n",
                            "    stable: v1\n    shadow: {version: v2, sample: 1.0}\n", 1)
        tmp = cfg.with_suffix(".new")
        tmp.write_text(iris + "  - name: iris-drill" + rest)
        tmp.chmod(0o600)
        os.replace(tmp, cfg)  # (the edit, saved by rename as editors do)
        env = dict(os.environ, KILLGATE_TOKEN=token)

        def report() -> dict:
            res = subprocess.run([sys.executable, "-m", "gateway", "--admin", admin, "--json",
                                  "shadow", "report", "iris"], capture_output=True, text=True,
                                 timeout=30, cwd=str(ROOT), env=env, check=False)
            return json.loads(res.stdout) if res.returncode == 0 else {}

        def compared() -> dict | None:
            req = urllib.request.Request(data + "/v2/models/iris/infer", data=BODY,
                                         method="POST")
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
            got = report()
            return got if got.get("compared", 0) >= 3 else None

        got = wait_until_sync(compared, 30, 0.2, "three comparisons")
    assert got["agreement"] == 1.0, json.dumps(got.get("disagreements"))[:600]
