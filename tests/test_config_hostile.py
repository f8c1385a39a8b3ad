"""The config file as hostile or careless input (it comes from git): what `killgate check`
and `killgate serve` do with files a config names that are no key files, and with values
YAML reads as something else. Each is refused with a specific message, never a traceback
or a hang."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import cli_fork
from tests.conftest import ROOT, free_port, write_config

ROUTES = """\
- name: r
  match: {path_prefix: /r}
  stable: v1
  versions:
    - {name: v1, url: 'http://127.0.0.1:1', weight: 100}
"""

#: a setting naming a file read as a key -> the config text naming `{}`
KEY_SETTINGS = {
    "hs256": "admin:\n  auth:\n    hs256_secret_file: '{}'\n",
    "public-key": "admin:\n  auth: {{algorithms: [RS256], public_key_file: '{}'}}\n",
    "signing-key": "state:\n  signing_key_file: '{}'\n",
    "webhook": "events:\n  webhooks: [{{url: 'http://127.0.0.1:1/x', secret_file: '{}'}}]\n",
}


def _not_a_key(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo"
    if kind == "folder":
        return tmp_path
    return Path("/dev/zero")


def _check(cfg: Path) -> subprocess.CompletedProcess[str]:
    """`killgate check` forked from a process that imported the CLI (tests/cli_fork.py)."""
    return cli_fork.run(["check", str(cfg)], dict(os.environ), str(ROOT), 20)


def _serve(cfg: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`killgate serve -c CFG`, which refuses its config at start, forked as `_check` is (a
    fresh interpreter's imports cost each ~0.6 s of CPU, 1.5-3 s of wall time loaded; what
    is checked happens after them, in main() as `python -m gateway` runs it)."""
    return cli_fork.run(["serve", "-c", str(cfg)], dict(os.environ) if env is None else env,
                        str(ROOT), 30)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
@pytest.mark.parametrize("setting", sorted(KEY_SETTINGS))
def test_check_refuses_a_key_file_that_is_no_regular_file(tmp_path: Path, setting: str,
                                                           kind: str) -> None:
    """A key file named as a FIFO blocked `killgate check` (and serve's start) for ever;
    /dev/zero was read until memory ran out; a folder said 'Is a directory: 3'."""
    path = _not_a_key(tmp_path, kind)
    cfg = tmp_path / "k.yaml"
    cfg.write_text(KEY_SETTINGS[setting].format(path) + "routes:\n"
                   + "".join("  " + line + "\n" for line in ROUTES.splitlines()))
    res = _check(cfg)
    assert res.returncode == 1, res.stderr
    assert "not a regular file" in res.stderr and str(path) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.timeout(40)
def test_serve_refuses_a_signing_key_fifo_at_once(tmp_path: Path) -> None:
    """`killgate serve` whose state.signing_key_file is a FIFO hung at its start (nothing
    listening, nothing said); it exits 1 naming the setting."""
    fifo = _not_a_key(tmp_path, "fifo")
    cfg = write_config(tmp_path, ROUTES, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}",
                       state=f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
                             f"  snapshot_path: {tmp_path}/snap.json\n"
                             f"  signing_key_file: '{fifo}'\n")
    res = _serve(cfg)
    assert res.returncode == 1, res.stderr
    assert "state.signing_key_file" in res.stderr and "not a regular file" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("setting", ["path", "snapshot_path", "audit_mirror"])
def test_a_state_file_that_is_a_fifo_is_refused_by_check_and_serve(tmp_path: Path,
                                                                     setting: str) -> None:
    """state.path, snapshot_path or audit_mirror naming a FIFO hung `serve`'s start for
    good, SIGTERM held (the snapshot is read before signals are handled; a store or mirror
    thread blocked in open() kept the process from exiting), and `check` said ok."""
    files = {"path": tmp_path / "store.json", "snapshot_path": tmp_path / "snap.json",
             "audit_mirror": tmp_path / "mirror.jsonl"}
    os.mkfifo(files[setting])
    cfg = write_config(tmp_path, ROUTES, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}",
                       state="state:\n  backend: local\n" + "".join(
                           f"  {k}: '{v}'\n" for k, v in files.items()))
    res = _check(cfg)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"state.{setting}: {files[setting]} is a folder, device, FIFO or socket" \
        in res.stderr, res.stderr
    res = _serve(cfg)
    assert res.returncode == 1, res.stderr
    assert f"killgate: config: state.{setting}: {files[setting]}" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def _rsa_public_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("alg, content, ok", [
    ("RS256", "not a key at all\n", False),
    ("ES256", "rsa", False),
    ("RS256", "rsa", True),
], ids=["garbage", "rsa-key-for-es256", "rsa-key-for-rs256"])
def test_check_refuses_a_public_key_file_no_allowed_algorithm_can_use(
        tmp_path: Path, alg: str, content: str, ok: bool) -> None:
    """A public_key_file holding no usable key for admin.auth.algorithms passed `check`
    ('ok') and `serve` started, then refused every admin call 401 'a valid bearer token is
    required', the operator's good token included: no kill through the API, and nothing
    said the key was the problem."""
    pem = tmp_path / "admin.pem"
    pem.write_text(_rsa_public_pem() if content == "rsa" else content)
    pem.chmod(0o644)
    cfg = tmp_path / "k.yaml"
    cfg.write_text(f"admin:\n  auth: {{algorithms: [{alg}], public_key_file: admin.pem}}\n"
                   "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines()))
    res = _check(cfg)
    if ok:
        assert res.returncode == 0, res.stderr
        return
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"admin.auth: {pem} holds no public key {alg} can use" in res.stderr, res.stderr


@pytest.mark.timeout(120)
def test_the_cross_route_checks_of_many_routes_are_not_quadratic() -> None:
    """2,900 routes (a file of 290 KB, under every YAML cap) took 11 s of the cross-route
    checks, comparing every pair of routes twice over (overlaps, and each route's dict of
    every other route's versions): CPU holding the GIL in the thread that validates a
    reload, beside the data plane's loop. Only routes that could overlap are compared."""
    import time

    from gateway.config_checks import semantic_problems

    text = "routes:\n" + "".join(
        f"- {{name: r{i}, match: {{path_prefix: /p{i:05d}}}, stable: v, "
        f"versions: [{{name: v, url: 'http://h:1'}}]}}\n" for i in range(2900))
    text += ("- {name: twin, match: {path_prefix: /p00007}, stable: w, "
             "versions: [{name: w, url: 'http://h:1'}, {name: s, url: 'http://h:2', "
             "weight: 0}], shadow: {version: v}}\n")
    import yaml

    from gateway.config import Config
    from gateway.config_yaml import MAX_NODES, load_yaml
    from gateway.configfile import MAX_FILE_BYTES

    # the file's document, built here: pure-Python YAML parsing it took 2.3 s of CPU (10 s
    # on a loaded machine), none of it what is measured; the text is what it reads as (its
    # first routes and the twin parsed), and within the caps a file is read under
    doc = {"routes": [{"name": f"r{i}", "match": {"path_prefix": f"/p{i:05d}"},
                       "stable": "v", "versions": [{"name": "v", "url": "http://h:1"}]}
                      for i in range(2900)]}
    doc["routes"].append(load_yaml(text.rsplit("\n", 2)[-2], "twin.yaml")[0])
    lines = text.splitlines(keepends=True)
    assert load_yaml("".join(lines[:4]), "head.yaml")["routes"] == doc["routes"][:3]
    def nodes(n: yaml.Node) -> int:
        kids = [x for pair in n.value for x in pair] if isinstance(n, yaml.MappingNode) else (
            n.value if isinstance(n, yaml.SequenceNode) else [])
        return 1 + sum(nodes(k) for k in kids)

    per_route = nodes(yaml.compose(lines[1])) - 1  # (less the one-item list around it)
    assert nodes(yaml.compose("".join(lines[:3]))) == 3 + 2 * per_route  # (doc, key, list)
    assert len(text.encode()) < MAX_FILE_BYTES
    assert 3 + 2900 * per_route + nodes(yaml.compose(lines[-1])) < MAX_NODES
    cfg = Config.model_validate(doc)
    started = time.process_time()
    problems = [str(p) for p in semantic_problems(cfg)]
    spent = time.process_time() - started
    assert problems == [
        "routes[2900].match: as specific as routes[7] ('r7') and can match the same "
        "requests; make one more specific",
        "routes[2900].shadow.version: 'v' is a version of route 'r2899', not of 'twin'; "
        "declare the shadow in this route's versions with weight 0"], problems
    assert spent < 2.0, f"{spent:.1f} s of CPU for the cross-route checks"


def test_a_file_not_in_utf8_names_the_line(tmp_path: Path) -> None:
    """A Latin-1 byte said only 'not UTF-8 (byte 1234)': find that in a 300-line file."""
    from gateway.configfile import load_config
    from gateway.errors import ConfigError

    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes(b"listen: 127.0.0.1:8080\nroutes:\n  - name: r  # caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(err.value.problems[0]) == (f"{cfg}: not UTF-8 at line 3 (byte 49); save the "
                                          "file as UTF-8")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("settings, says", [
    ({"snapshot_path": "state.json"}, "state.path: {d}/state.json: state.path and "
                                      "state.snapshot_path are the same file"),
    ({"audit_mirror": "state.json.audit.jsonl"},
     "state.audit_mirror: {d}/state.json.audit.jsonl: state.audit_mirror and the audit "
     "trail of state.path are the same file"),
    ({"audit_mirror": "./snap.json"}, "state.audit_mirror: {d}/snap.json: "
                                      "state.audit_mirror and state.snapshot_path are the same"),
], ids=["snapshot-is-the-store", "mirror-is-the-trail", "mirror-is-the-snapshot"])
def test_two_state_settings_naming_one_file_are_refused(tmp_path: Path, settings: dict[str, str],
                                                        says: str) -> None:
    """snapshot_path equal to state.path passed check; serve then had the store and the
    snapshot overwrite each other's file, each refusing the other's signature: a
    'state_unverified ... signature does not match' tamper alarm and a re-seed at every
    write (reproduced: 35 unverified in 10 s). check and serve refuse it."""
    state = {"backend": "local", "path": "state.json", "snapshot_path": "snap.json", **settings}
    cfg = write_config(tmp_path, ROUTES, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}",
                       state="state:\n" + "".join(f"  {k}: '{v}'\n" for k, v in state.items()))
    res = _check(cfg)
    assert res.returncode == 1, res.stdout + res.stderr
    assert says.format(d=tmp_path) in res.stderr, res.stderr
    res = _serve(cfg)
    assert res.returncode == 1, res.stderr
    assert "killgate: config: " + says.format(d=tmp_path) in res.stderr, res.stderr


@pytest.mark.timeout(60)
def test_a_key_variable_that_is_not_utf8_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A key variable set to raw random bytes (`export K=$(head -c 32 /dev/urandom)`, say)
    came out of `serve` as a UnicodeEncodeError traceback (state.signing_key_env), and
    `check` said 'admin.auth: 'utf-8' codec can't encode characters...'."""
    cfg = write_config(tmp_path, ROUTES, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}",
                       state=f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
                             f"  snapshot_path: {tmp_path}/snap.json\n"
                             "  signing_key_env: KG_BINARY_KEY\n",
                       extra="events:\n  webhooks: [{url: 'https://h.example/x', "
                             "secret_env: KG_BINARY_KEY}]\n")
    env = {**os.environ, "KG_BINARY_KEY": os.fsdecode(b"0123456789abcdef" * 3 + b"\xff\xfe")}
    says = ("the environment variable KG_BINARY_KEY holds bytes that are not UTF-8 text; "
            "set it to a key such as `openssl rand -hex 32` prints")
    res = cli_fork.run(["check", str(cfg)], env, str(ROOT), 20)
    assert res.returncode == 1, res.stderr
    assert f"state.signing_key_env: {says}" in res.stderr, res.stderr
    assert f"events.webhooks[0].secret_env: {says}" in res.stderr, res.stderr
    res = _serve(cfg, env)
    assert res.returncode == 1, res.stderr
    assert f"killgate: config: state.signing_key_env: {says}" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("value", "said"), [
    ("{error: down, since: 2024-01-01}", "since is read by YAML as a date"),
    ("{blob: !!binary aGVsbG8=}", "blob is read by YAML as bytes"),
    ("[ok, !!set {a, b}]", "[1] is read by YAML as a set"),
    ("{retry: [1, {after: .nan}]}", "retry[1].after is nan"),
])
def test_a_fallback_json_that_is_no_json_is_refused_by_check(value: str, said: str) -> None:
    """A fallback `json` YAML reads as a date, bytes or a set (or .nan) passed `killgate
    check`, then `serve` died at its start with a TypeError traceback (its body is
    serialised as the routing table is built) and a reload was refused saying only
    'TypeError'. It is refused by the schema, naming where; plain JSON still builds."""
    from gateway.configfile import parse_config_text
    from gateway.domain.statedoc import StateDoc
    from gateway.domain.tablebuild import build_table
    from gateway.errors import ConfigError

    text = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text + f"    fallback: {{status: 503, json: {value}}}\n")
    assert [p.path for p in refused.value.problems] == ["routes[0].fallback.json"]
    assert said in refused.value.problems[0].message
    cfg = parse_config_text(text + "    fallback: {json: {error: down, at: '2024-01-01'}}\n")
    assert build_table(cfg, StateDoc()).routes[0].fallback_body == \
        b'{"error": "down", "at": "2024-01-01"}'


#: what `openssl rand -base64 32` and `openssl rand -hex 32` print (one starting with a letter)
PASTED = ["Zm9vYmFyYmF6cXV1eDEyMzQ1Njc4OTBhYmNkZWZnaGlqaw", "f3a9" + "0123456789abcdef" * 3]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["killgate-admin-jwt-signing-secret",
                                  "killgate.admin.jwt.signing.secret",
                                  "KILLGATE-EVENTS-WEBHOOK-SIGNING-SECRET"])
def test_a_long_kubernetes_style_variable_name_is_not_taken_for_a_secret(name: str) -> None:
    """envFrom a Kubernetes Secret makes each of its keys a variable, often dashed or
    dotted (`killgate-admin-jwt-signing-secret`); such a name of 32+ characters (it worked
    before revconf5) was refused as 'looks like a secret' for having no underscore, the
    config the fleet ran on refused at the next start. Words in one case joined by '-' or
    '.' are a name; secrets with dashes (base64url: mixed case; a UUID: all hex) are not."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    routes = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    cfg = parse_config_text(f"admin: {{auth: {{hs256_secret_env: {name}}}}}\n" + routes)
    assert cfg.admin.auth.hs256_secret_env == name
    for secret in ("550e8400-e29b-41d4-a716-446655440000",
                   "Zm9v-YmFyYmF6cXV1eDEyMzQ1Njc4OTBhYmNkZWZnaGlqaw"):
        with pytest.raises(ConfigError) as refused:
            parse_config_text(f"drills: {{key_env: {secret}}}\n" + routes)
        said = str(refused.value.problems[0])
        assert "looks like a secret" in said and secret not in said, said


@pytest.mark.timeout(10)
@pytest.mark.parametrize("secret", PASTED)
@pytest.mark.parametrize("setting", [
    "admin:\n  auth: {{hs256_secret_env: {}}}\n",
    "admin:\n  auth:\n    scoped_keys: [{{name: d, hs256_secret_env: {}, "
    "max_scopes: [killgate:drill]}}]\n",
    "state: {{signing_key_env: {}}}\n",
    "events: {{webhooks: [{{url: 'http://127.0.0.1:1/x', secret_env: {}}}]}}\n",
    "drills: {{key_env: {}}}\n",
], ids=["hs256", "scoped", "signing", "webhook", "drill"])
def test_a_secret_pasted_as_a_variable_name_is_refused_unshown(setting: str,
                                                                secret: str) -> None:
    """A secret written where its environment variable's name goes passed the schema, and
    `killgate check` (and serve's log) quoted it: 'set the environment variable <secret>'.
    It is refused without being shown; long names of real variables still pass."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    routes = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    with pytest.raises(ConfigError) as refused:
        parse_config_text(setting.format(secret) + routes)
    said = "; ".join(map(str, refused.value.problems))
    assert "looks like a secret" in said and secret not in said, said
    for name in ("KILLGATE_EVENTS_WEBHOOK_SECRET_PRODUCTION_EU", "MyApp_Prod_Killgate_Secret_2024_Q3",
                 *CAMEL_NAMES):
        parse_config_text(setting.format(name) + routes)
    # a variable's name written as a reference is a name, whatever it looks like: NAME
    for ref in (f"'${{{secret}}}'", f"'${secret}'"):
        parse_config_text(setting.format(ref) + routes)


#: long CamelCase names of variables, refused as 'looks like a secret' before (found by
#: review: `MyCompanyProdKillgateJwtSecret_V2`, mixed case and digits with one underscore)
CAMEL_NAMES = ["MyCompanyProdKillgateJwtSecret_V2", "KillgateAdminJwtSigningSecretProd",
               "prodKillgateAdminJwtSecretEuWest1", "AcmeCorpKillgateJWTSigningKeyProduction"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", CAMEL_NAMES)
def test_a_long_camelcase_variable_name_is_a_name(name: str) -> None:
    """`hs256_secret_env: MyCompanyProdKillgateJwtSecret_V2` was refused as 'looks like a
    secret' (the config the fleet ran on, refused at the next start); now a CamelCase
    identifier of words is a name, and `${NAME}` / `$NAME` always is (read as NAME)."""
    from gateway.configfile import parse_config_text

    routes = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    for written in (name, f"'${{{name}}}'", f"${name}"):
        cfg = parse_config_text(f"admin: {{auth: {{hs256_secret_env: {written}}}}}\n"
                                f"state: {{signing_key_env: {written}}}\n" + routes)
        assert cfg.admin.auth.hs256_secret_env == name, written
        assert cfg.state.signing_key_env == name, written


@pytest.mark.timeout(10)
@pytest.mark.parametrize("secret", [
    "Zm9vYmFyYmF6cXV1eDEyMzQ1Njc4OTBhYmNkZWZnaGlqaw", "f3a9" + "0123456789abcdef" * 3,
    "eiowoZzwnamxxqqcUdfnqOuXSbRvuiqL", "QniCifJWMdOqmXdhcnLbaxwvvertBUNVziqqOgzk",
    "HvLhzvfpMjeOafurFifrhmMXaczevQxn", "550e8400-e29b-41d4-a716-446655440000",
    "MyCompanyProdKillgateJwtSecret_V2" + "x9Q"])
def test_keys_that_look_camelcase_are_still_refused_unshown(secret: str) -> None:
    """Random keys that pass for CamelCase at a glance (what a looser reading of words let
    through: a vowel-less word, four consonants in a row, one-letter words) are still refused,
    not shown; the refusal says how to write a name that only looks like a key."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    routes = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    with pytest.raises(ConfigError) as refused:
        parse_config_text(f"admin: {{auth: {{hs256_secret_env: '{secret}'}}}}\n" + routes)
    said = str(refused.value.problems[0])
    assert "looks like a secret" in said and secret not in said and "${NAME}" in said, said


@pytest.mark.timeout(10)
@pytest.mark.parametrize("setting", [
    'state: {snapshot_path: "var/snap\\ud800.json"}',
    'state: {audit_mirror: "var/m\\udc80.jsonl"}',
    'admin: {auth: {hs256_secret_file: "k\\ude00\\ud83d"}}',
    'admin: {auth: {issuer: "kg-\\ud83d"}}',
])
def test_a_surrogate_escape_is_refused_not_a_traceback(tmp_path: Path, setting: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A "\\ud800" escape (half of a UTF-16 pair) in a path: `killgate check` (and serve)
    ended in a UnicodeEncodeError traceback. It is refused by the loader, naming the line;
    the character itself, or its \\U escape, still loads."""
    from gateway.cli.main import main

    cfg = tmp_path / "k.yaml"
    routes = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    cfg.write_text(setting + "\n" + routes)
    assert main(["check", str(cfg)]) == 1
    said = capsys.readouterr().err
    assert "YAML syntax error at line 1" in said and "UTF-16 pair" in said, said
    cfg.write_text('admin: {auth: {issuer: "kg-\\U0001F600-\U0001F600"}}\n' + routes)
    assert main(["check", str(cfg)]) == 0


@pytest.mark.timeout(10)
def test_a_utf16_pair_of_escapes_is_the_character_it_writes(tmp_path: Path) -> None:
    """JSON writes a character beyond U+FFFF as two \\u escapes ("\\ud83d\\udea8"), and YAML
    reads them as two halves: such a pair was refused as a lone half. It is the character."""
    from gateway.configfile import load_config

    cfg = tmp_path / "k.yaml"
    routes = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    cfg.write_text('admin: {auth: {issuer: "kg-\\ud83d\\udea8 \\ud83d\\ude00"}}\n' + routes)
    assert load_config(cfg).config.admin.auth.issuer == "kg-\U0001F6A8 \U0001F600"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("url", ["not a url", "ftp://hooks.example/x", "http://",
                                 "http://hooks.example:99999/x", ""])
def test_an_analysis_webhook_no_post_can_reach_is_refused(url: str) -> None:
    """routes[].analysis.webhook_url took any text: `check` said ok, and each automatic
    rollback's notice to it failed (retried, then `event_failed`). It is read as
    events.webhooks[].url is; a usable URL still loads."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    text = ("routes:\n  - name: r\n    match: {path_prefix: /r}\n    stable: v1\n"
            "    analysis: {webhook_url: '%s'}\n    versions:\n"
            "      - {name: v1, url: 'http://127.0.0.1:1', weight: 100}\n"
            "      - {name: v2, url: 'http://127.0.0.1:2', weight: 0}\n")
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text % url)
    assert [p.path for p in refused.value.problems] == ["routes[0].analysis.webhook_url"]
    parse_config_text(text % "https://hooks.example/services/T0/B0/x?token=t0k3n")


@pytest.mark.timeout(10)
def test_a_section_left_empty_says_so() -> None:
    """A section whose every key is commented out reads as null: 'server: must be a
    mapping' sent the operator looking for a type they never wrote."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    routes = "routes:\n" + "".join("  " + line + "\n" for line in ROUTES.splitlines())
    for text, path in (("server:\n  # max_inflight: 100\n" + routes, "server"),
                       ("events:\n  webhooks:\n  # - {url: 'http://h/x'}\n" + routes,
                        "events.webhooks")):
        with pytest.raises(ConfigError) as refused:
            parse_config_text(text)
        assert [str(p) for p in refused.value.problems] == [
            f"{path}: is empty (nothing under it but comments?): give it its "
            f"{'items' if path.endswith('s') else 'keys'}, or remove the line"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("where", "value", "said"), [
    ("url", "http://127.0.0.1:1/v1\u200b", "U+200B at position 22"),
    ("url", "http://models\u200b.svc:8080", "U+200B"),
    ("url", "http://bücher.example:8080", "xn-- (IDNA)"),
    ("health", "/v2/hëalth", "printable ASCII"),
])
def test_a_url_with_a_character_no_request_line_can_carry_is_refused(where: str, value: str,
                                                                     said: str) -> None:
    """A version url (or health.path) holding a character outside printable ASCII, such as
    a zero-width space pasted with it, passed `check`; the gateway wrote it raw into every
    request line to that backend, each answered 400 `Invalid char in url path`."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    url, health = (value, "/h") if where == "url" else ("http://127.0.0.1:1", value)
    text = ("routes:\n  - name: r\n    match: {path_prefix: /r}\n    stable: v1\n"
            f"    health: {{path: '{health}'}}\n"
            f"    versions: [{{name: v1, url: '{url}', weight: 100}}]\n")
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text)
    problem = refused.value.problems[0]
    assert problem.path.endswith("url" if where == "url" else "health.path"), problem
    assert said in problem.message and value not in problem.message, problem


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("setting", "path"), [
    ("routes[0].versions[0].url", "http://${BACKEND_HOST}:8080"),
    ("events.webhooks[0].url", "https://$HOOK_HOST/hooks/kg"),
    ("state.url", "redis://:pw@${REDIS_HOST}:6379/0"),
])
def test_a_variable_left_in_a_host_is_refused_by_check(setting: str, path: str) -> None:
    """`${VAR}` is taken literally (no expansion): a host written so passed `check`, and no
    request (or store connection) ever left, the name `${backend_host}` resolving nowhere.
    Refused, saying that nothing expands it."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    url = path if setting.startswith("routes") else "http://127.0.0.1:1"
    extra = {"events.webhooks[0].url": f"events: {{webhooks: [{{url: '{path}', "
                                       "secret_env: HOOK_SECRET}]}\n",
             "state.url": f"state: {{backend: redis, url: '{path}', signing_key_env: K}}\n"
             }.get(setting, "")
    text = (extra + "routes:\n  - name: r\n    match: {path_prefix: /r}\n    stable: v1\n"
            f"    versions: [{{name: v1, url: '{url}', weight: 100}}]\n")
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text)
    assert [p.path for p in refused.value.problems] == [setting]
    assert "does not expand environment variables" in refused.value.problems[0].message
