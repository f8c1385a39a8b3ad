"""What a new user meets putting killgate in front of their own model servers (the third
new-user pass): config values that passed `killgate check` and then failed at start, and
answers that said "Not Found" or "no route" with nothing of why."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from yarl import URL

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


async def test_no_route_by_model_names_the_model(tmp_path: Path, backends, session) -> None:
    """config/openai.yaml routes /v1 by the body's model: a request for a model no route
    serves got 'no route matches POST /v1/chat/completions', on the path that served
    chat-small a moment before; the 404 now names the model it was asked for (or that the
    body had none)."""
    p = await backends(echo_app("v1"))
    routes = f"""\
- name: chat-small
  match: {{path_prefix: /v1, model: chat-small}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}
"""
    async with running_gateway(write_config(tmp_path, routes)) as g:
        url = g.url + "/v1/chat/completions"
        async with session.post(url, json={"model": "chat-small"}) as r:
            assert r.status == 200
        async with session.post(url, json={"model": "gpt-4" + chr(27) + "[2J" + "x" * 500}) as r:
            assert r.status == 404
            msg = (await r.json())["error"]["message"]
        assert msg == ("no route matches POST /v1/chat/completions with model "
                       f"{'gpt-4' + chr(27) + '[2J' + 'x' * 119!r}"), msg
        async with session.post(url, data=b"not json") as r:
            assert r.status == 404
            msg = (await r.json())["error"]["message"]
        assert msg.endswith("with no 'model' field in the body (not a JSON object or a "
                            "form)"), msg
        async with session.post(url, json={"x": 1}) as r:
            assert r.status == 404
            msg = (await r.json())["error"]["message"]
        assert msg.endswith("with no 'model' field in the JSON body"), msg
        # JSON sent as a form, as `curl -d` sends it (found trying config/openai.yaml as a
        # new user: "no 'model' field in the urlencoded form body" on a body that plainly
        # has one): refused 400 (review revplane: some backends read it as JSON whatever its
        # Content-Type, so its 'model' cannot be checked), saying why and what to send
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for body in (b'{"model":"chat-small"}', b'{"model": "chat-small"}'):
            async with session.post(url, data=body, headers=form) as r:
                assert r.status == 400, body
                msg = (await r.json())["error"]["message"]
            assert "sent as a form but begins as a JSON object" in msg, msg
            assert "-H 'Content-Type: application/json'" in msg, msg
    p2 = await backends(echo_app("v1"))  # (routes by path alone: as before)
    async with running_gateway(write_config(tmp_path, two_versions(p2, p2))) as g:
        r = await session.post(g.url + "/elsewhere", json={"model": "m"})
        assert (await r.json())["error"]["message"] == "no route matches POST /elsewhere"


async def test_no_route_without_a_body_says_so(tmp_path: Path, backends, session) -> None:
    """Fifth new-user pass, config/openai.yaml's shape: `GET /v1/models/<name>` of a model
    no route takes (an SDK's `models.retrieve`), and a request with no body at all, were 404
    "... with no 'model' field in the body (not a JSON object or a form)": on a GET, which has
    no body. The 404 now names the model and where the list is, or says there was no body."""
    p = await backends(echo_app("v1"))
    routes = f"""\
- name: chat
  match: {{path_prefix: /v1, model: chat}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}
"""
    async with running_gateway(write_config(tmp_path, routes)) as g:
        async with session.get(g.url + "/v1/models/chat") as r:
            assert r.status == 200 and (await r.json())["id"] == "chat"
        async with session.get(g.url + "/v1/models/gpt-4") as r:
            assert r.status == 404
            msg = (await r.json())["error"]["message"]
        assert msg == ("no route matches GET /v1/models/gpt-4: no route takes model 'gpt-4' "
                       "there (GET /v1/models lists the models routed there)"), msg
        for method in ("GET", "POST"):
            async with session.request(method, g.url + "/v1/chat/completions") as r:
                assert r.status == 404
                msg = (await r.json())["error"]["message"]
            assert msg == (f"no route matches {method} /v1/chat/completions with no body "
                           "(the routes there match by the JSON body's 'model')"), msg
        async with session.post(g.url + "/v1/chat/completions", json={"model": ""}) as r:
            assert r.status == 404  # (an empty name is still a model named)
            assert (await r.json())["error"]["message"].endswith("with model ''")

def test_the_console_sign_in_says_how_to_get_a_token() -> None:
    """The console's sign-in asked for 'Admin token (a JWT, as for killgate --token)' and
    said nowhere how a new user gets one."""
    from tests.conftest import ROOT

    page = (ROOT / "gateway" / "admin" / "ui" / "index.html").read_text()
    signin = page.split('<section id="signin"', 1)[1].split("</section>", 1)[0]
    assert "killgate token -c CONFIG" in " ".join(signin.split()), signin
    assert "In front of your own model servers" in " ".join(signin.split())
    assert "### In front of your own model servers" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:9o01",
                                 "http://127.0.0.1:0", "http://[::1"])
async def test_a_backend_url_whose_port_is_no_port_is_refused_by_check(
        tmp_path: Path, url: str) -> None:
    """A mistyped port (99999, a letter O for a zero) passed `killgate check` ('ok'), then
    `killgate serve` died with a traceback (ValueError: Port out of range) and a reload
    was refused saying only 'could not be read or applied (ValueError)'."""
    cfg = tmp_path / "k.yaml"
    cfg.write_text((Path(__file__).parent.parent / "config" / "minimal.yaml").read_text()
                   .replace("http://127.0.0.1:9101", url))
    res = await acli("check", str(cfg))
    assert res.returncode == 1, res.stdout
    assert "routes[0].versions[0].url: must be an http:// or https:// URL whose port is a " \
        "number from 1 to 65535" in res.stderr, res.stderr
    res = await acli("serve", "-c", str(cfg))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "routes[0].versions[0].url: must be" in res.stderr, res.stderr


async def test_an_unquoted_ipv6_listen_says_to_quote_it(tmp_path: Path) -> None:
    """README said `[::1]:8080` for IPv6; written so, YAML reads a list and check said only
    'YAML syntax error at line 1, column 10: expected the node content, but found ':''."""
    minimal = (Path(__file__).parent.parent / "config" / "minimal.yaml").read_text()
    cfg = tmp_path / "k.yaml"
    cfg.write_text(minimal.replace("listen: 0.0.0.0:8080", "listen: [::1]:8080"))
    res = await acli("check", str(cfg))
    assert res.returncode == 1
    assert 'must be quoted: listen: "[::1]:8080"' in res.stderr, res.stderr
    cfg.write_text(minimal.replace("listen: 0.0.0.0:8080", 'listen: "[::1]:8080"'))
    res = await acli("check", str(cfg))
    assert res.returncode == 0, res.stderr
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert '`"[::1]:8080"` for IPv6, quoted' in readme


@pytest.mark.parametrize(("extra", "path"), [
    ('telemetry: {otlp_endpoint: "http://127.0.0.1:99999"}\n', "telemetry.otlp_endpoint"),
    ('admin: {auth: {algorithms: [RS256], jwks_url: "https://idp:99999/jwks"}}\n',
     "admin.auth.jwks_url"),
])
async def test_other_urls_whose_port_is_no_port_are_refused_by_check(
        tmp_path: Path, extra: str, path: str) -> None:
    """The OTLP endpoint and the JWKS URL passed check with port 99999: the exporter then
    logged 'Failed to parse' at every batch, the key set could never be fetched."""
    cfg = tmp_path / "k.yaml"
    cfg.write_text((Path(__file__).parent.parent / "config" / "minimal.yaml").read_text()
                   + extra)
    res = await acli("check", str(cfg))
    assert res.returncode == 1, res.stdout
    assert f"{path}: must be an http:// or https:// URL whose port is a number" in res.stderr, \
        res.stderr


async def test_the_admin_root_says_where_the_console_and_api_are(
        tmp_path: Path, backends, session) -> None:
    """A new user opening http://127.0.0.1:8081/ in a browser got
    {"error": {"type": "not_found", "message": "Not Found"}} and nothing else."""
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        for path in ("/", "/v1/nothing"):
            async with session.get(g.admin + path) as r:
                assert r.status == 404
                err = (await r.json())["error"]
            assert err["type"] == "not_found"
            assert err["message"] == (
                f"nothing at {path!r} here: the admin API's calls are under /v1/ (GET "
                "/openapi.json lists them), the operator console is at /ui/"), err


async def test_a_tab_in_the_file_says_yaml_takes_spaces(tmp_path: Path) -> None:
    """An editor that indents with tabs: check said only "found character '\\t' that cannot
    start any token" (found by the fourth new-user pass); it now says what to do. Nothing
    is served from such a file: `serve` refuses it alike."""
    minimal = (Path(__file__).parent.parent / "config" / "minimal.yaml").read_text()
    cfg = tmp_path / "k.yaml"
    for text in (minimal.replace("\n  - name: iris", "\n\t- name: iris"),
                 minimal.replace("stable: v1", "stable:\tv1\t")):
        cfg.write_text(text)
        for argv in (["check", str(cfg)], ["serve", "-c", str(cfg)]):
            res = await acli(*argv)
            assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
            assert "YAML syntax error at line " in res.stderr, res.stderr
            assert ("that cannot start any token (a tab: YAML indents and separates with "
                    "spaces only; replace it with spaces)") in res.stderr, res.stderr


async def test_a_kubernetes_manifest_given_as_the_config_says_what_it_is(tmp_path: Path) -> None:
    """`killgate check deploy/kubernetes/overlays/example/configmap.yaml` said
    `apiVersion: unknown key`, `kind: unknown key`, `routes: required` (fourth new-user
    pass); it now says what the file is and, for a ConfigMap, how to check the config it
    holds, and that command works as printed."""
    root = Path(__file__).parent.parent
    cm = root / "deploy" / "kubernetes" / "overlays" / "example" / "configmap.yaml"
    res = await acli("check", str(cm))
    assert res.returncode == 1, res.stdout
    said = (f"{cm}: a Kubernetes 'ConfigMap' manifest, not a killgate config; the config it "
            f"holds is data[\"config.yaml\"]: check that, e.g. `yq -r '.data[\"config.yaml\"]' "
            f"{cm} > /tmp/k.yaml && killgate check /tmp/k.yaml`")
    assert res.stderr.strip() == said, res.stderr
    dep = root / "deploy" / "kubernetes" / "base" / "deployment.yaml"
    res = await acli("serve", "-c", str(dep))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{dep}: a Kubernetes 'Deployment' manifest, not a killgate config" in res.stderr
    # the command it prints, run (its output elsewhere than /tmp/k.yaml: tests share /tmp)
    out = tmp_path / "k.yaml"
    yq = await asyncio.to_thread(subprocess.run, ["yq", "-r", '.data["config.yaml"]', str(cm)],
                                 capture_output=True, text=True, timeout=30, check=True)
    out.write_text(yq.stdout)
    res = await acli("check", str(out))
    assert res.returncode == 0, res.stderr


async def test_the_readmes_verb_prefix_routes_kserve_v1_and_its_kill_holds(
        tmp_path: Path, backends, session) -> None:
    """README (walk-through, `path_prefix`): `/v1/models/iris` does not match KServe V1's
    `/v1/models/iris:predict` (fourth new-user pass: a 404 `no_route` with nothing of why);
    the prefix with the verb does, escaped or not, and a kill of that route stops both."""
    p = await backends(echo_app("v1"))
    for prefix, served in (("/v1/models/iris", False), ("/v1/models/iris:predict", True)):
        routes = two_versions(p, p, prefix=prefix)
        async with running_gateway(write_config(tmp_path, routes)) as g:
            for path in ("/v1/models/iris:predict", "/v1/models/iris%3Apredict"):
                async with session.post(URL(g.url + path, encoded=True), json={}) as r:
                    assert r.status == (200 if served else 404), (prefix, path, r.status)
                    if served:  # (as sent: the escape reached the backend unchanged)
                        assert (await r.json())["path"] == path
            if not served:
                continue
            async with session.post(g.admin + "/v1/kill", json={
                    "scope": "route", "route": "iris", "reason": "r"},
                    headers={"Authorization": "Bearer " + admin_token("killgate:kill")}) as r:
                assert r.status == 200, await r.text()
            for path in ("/v1/models/iris:predict", "/v1/models/iris%3Apredict"):
                async with session.post(URL(g.url + path, encoded=True), json={}) as r:
                    assert r.status == 503 and r.headers["x-killgate-decision"] == "killed"
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "write the verb into the prefix, `/v1/models/iris:predict`" in readme


async def test_the_command_printed_for_a_configmap_quotes_its_key(tmp_path: Path) -> None:
    """Review of revnewuser: the key of the ConfigMap's data is the file's own text, printed
    inside single quotes; a key holding `'` made the printed command, pasted, run what the
    file put after it (`$(touch ...)`). The expression is quoted as a whole now."""
    pwned = tmp_path / "pwned"
    key = f"a'$(touch {pwned})'.yaml"
    cm = tmp_path / "cm.yaml"
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n"
                  f"  {json.dumps(key)}: 'routes: []'\n")
    res = await acli("check", str(cm))
    assert res.returncode == 1, res.stdout
    command = res.stderr.split("`")[1].split(" > ")[0]  # (the yq part: it reads the key)
    yq = await asyncio.to_thread(subprocess.run, ["bash", "-c", command], capture_output=True,
                                 text=True, timeout=30, cwd=tmp_path)
    assert not pwned.exists(), command
    assert yq.returncode == 0 and yq.stdout.strip() == "routes: []", (command, yq.stderr)


@pytest.mark.parametrize("url, noted", [("http://127.0.0.1:1/v1", True),
                                        ("http://127.0.0.1:1/v1/", True),
                                        ("http://127.0.0.1:1/openai", False),
                                        ("http://127.0.0.1:1/xv1", False),
                                        ("http://127.0.0.1:1", False)])
async def test_a_version_url_ending_in_its_path_prefix_is_noted(
        tmp_path: Path, url: str, noted: bool) -> None:
    """Fifth new-user pass: an OpenAI SDK's base URL pasted as a version's url
    (`http://vllm:8000/v1` under `path_prefix: /v1`) passed `check`, and every request went
    to `/v1/v1/chat/completions`: the backend's 404 was all a client saw."""
    routes = f"""\
- name: chat
  match: {{path_prefix: /v1, model: chat}}
  stable: v1
  versions:
    - {{name: v1, url: "{url}", weight: 100}}
"""
    cfg = write_config(tmp_path, routes)
    res = await acli("check", str(cfg))
    assert res.returncode == 0 and f"{cfg}: ok" in res.stdout, res  # a note, not an error
    said = (f"note: routes[0].versions[0].url {url.rstrip('/')!r} ends in the route's path_prefix '/v1': "
            "the request path is appended to the url's, so /v1/... goes to /v1/v1/...; if "
            "the server serves /v1 itself, drop it from the url") in res.stderr
    assert said == noted, res.stderr
