"""The Kubernetes manifests in deploy/kubernetes (issue 15 item 2).

Every manifest validates (kubernetes-validate, strict: unknown fields are errors) against
Kubernetes 1.33; the kustomizations name files that exist and leave none out; the config in
each ConfigMap passes `killgate check`; and the Deployment is read back for what a gateway
fleet depends on: probes on the admin port (/readyz, /healthz), a preStop delay before the
drain with a grace period that covers both, a non-root read-only security context, resources,
topology spread, the keys from the Secret, a ConfigMap mount that receives updates (no
subPath). Readiness itself is checked on a real `killgate serve`: /readyz stays 503 until the
kill state is loaded, and the first 200 comes with the kill enforced.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp import ClientSession

from gateway.configfile import parse_config_text
from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import ROOT, free_port, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder
from tests.redisha import redis_state_yaml, state_key_env
from tests.test_killswitch import kill, status_of

K8S_VERSION = "1.33.0"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
BASE, OVERLAY = DEPLOY / "base", DEPLOY / "overlays" / "example"
#: API groups of custom resources (the Prometheus operator's PodMonitor, an optional component)
CUSTOM_GROUPS = {"monitoring.coreos.com"}


def _manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(kind: str, folder: Path = BASE) -> dict[str, Any]:
    found = [d for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"
             for d in _docs(p) if d["kind"] == kind]
    assert len(found) == 1, (kind, len(found))
    return found[0]


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates_against_kubernetes(path: Path) -> None:
    for doc in _docs(path):
        if doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue  # (no schema here: tests/test_deploy_review3.py reads it)
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_caught() -> None:
    """The validator is not a rubber stamp: an unknown field and a wrong type are errors."""
    dep = _one("Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    dep = _one("Deployment")
    dep["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_kustomizations_name_every_manifest_and_nothing_missing() -> None:
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(base["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"}
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    for res in overlay["resources"]:
        assert (OVERLAY / res).exists(), res
    for patch in overlay["patches"]:
        assert (OVERLAY / patch["path"]).exists(), patch
    want = {"killgate-keys": {"KILLGATE_JWT_SECRET", "KILLGATE_STATE_KEY"},
            "killgate-drill-key": {"KILLGATE_DRILL_JWT_SECRET"}}  # (the drill CronJob's)
    assert {gen["name"] for gen in overlay["secretGenerator"]} == set(want)
    for gen in overlay["secretGenerator"]:
        assert gen["behavior"] == "replace"
        assert gen["options"]["disableNameSuffixHash"] is True
        example = (OVERLAY / (gen["envs"][0] + ".example")).read_text()
        assert all(f"{k}=" in example for k in want[gen["name"]])
    # the base's Secrets hold placeholders that killgate refuses (shorter than 32 bytes)
    secrets = {d["metadata"]["name"]: d for p in BASE.glob("secret*.yaml") for d in _docs(p)}
    assert {n: set(s["stringData"]) for n, s in secrets.items()} == want
    assert all(len(v) < 32 for s in secrets.values() for v in s["stringData"].values())


def _config_of(cm: dict[str, Any]) -> Any:
    return parse_config_text(cm["data"]["config.yaml"], "configmap")


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_configmap_config_passes_killgate_check(folder: Path, tmp_path: Path) -> None:
    # README "Deploying" step 4: the ConfigMap's file, through `killgate check` itself, with
    # the keys the Secret provides
    (tmp_path / "config.yaml").write_text(_one("ConfigMap", folder)["data"]["config.yaml"])
    env = {**os.environ, "KILLGATE_JWT_SECRET": "j" * 40, "KILLGATE_STATE_KEY": "s" * 40,
           "KILLGATE_DRILL_JWT_SECRET": "d" * 40}
    res = cli_fork.run(["check", str(tmp_path / "config.yaml")], env, str(ROOT), 30)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    cfg = _config_of(_one("ConfigMap", folder))
    assert cfg.state.backend == "redis" and cfg.state.url.startswith("redis+sentinel://")
    assert cfg.state.min_replicas >= 1  # acknowledged kills survive a failover
    assert cfg.state.snapshot_path.startswith("/var/lib/killgate/")  # the writable volume
    assert "signing_key_env: KILLGATE_STATE_KEY" in _one("ConfigMap", folder)["data"]["config.yaml"]


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_deployment_probes_drain_and_security() -> None:
    dep = _one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = _container(dep)
    cfg = _config_of(_one("ConfigMap"))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["data"] == int(cfg.listen.rsplit(":", 1)[1])
    assert ports["admin"] == int(cfg.admin.listen.rsplit(":", 1)[1])
    # the kubelet probes it from the node, at the pod's IP (IPv4 or IPv6: test_deploy_review3)
    assert cfg.admin.listen.startswith("[::]:")

    # probes: readiness is /readyz (503 until the kill state is loaded, and while
    # draining), liveness /healthz; both on the admin port
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["periodSeconds"] <= 5
    # liveness never restarts a pod faster than a slow moment could pass
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 20

    # preStop delay, then the drain, within the grace period
    delay = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 5 <= delay <= 30
    grace = pod["terminationGracePeriodSeconds"]
    stop = delay + cfg.server.shutdown_delay + cfg.server.drain_timeout
    assert grace > stop, (grace, delay, cfg.server.shutdown_delay, cfg.server.drain_timeout)
    # (lifecycle review) clients kept alive on the pod are told to reconnect before its
    # listener closes: the preStop sleep alone left them sending until the drain reset them
    assert cfg.server.shutdown_delay >= 2, cfg.server.shutdown_delay

    # non-root, read-only root filesystem, nothing extra
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert csc.get("privileged", False) is False
    assert pod["automountServiceAccountToken"] is False
    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    assert f"\nUSER {psc['runAsUser']}:{psc['runAsGroup']}\n" in dockerfile

    # writable places are volumes: the snapshot folder and /tmp; the config is a folder
    # mount (a subPath mount never receives ConfigMap updates)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert set(mounts) == {"/etc/killgate", "/var/lib/killgate", "/tmp"}
    assert mounts["/etc/killgate"]["readOnly"] is True
    assert all("subPath" not in m for m in c["volumeMounts"])
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/etc/killgate"]["name"]]["configMap"]["name"] == "killgate-config"
    assert "emptyDir" in vols[mounts["/var/lib/killgate"]["name"]]
    assert c["args"] == ["serve", "-c", "/etc/killgate/config.yaml"]

    # resources, replicas, spread, rollout that never lowers capacity
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    assert "replicas" not in dep["spec"]  # the HPA's (test_an_apply_never_undoes_...)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}

    # every key the config names comes from the Secret
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]
           if "secretKeyRef" in e.get("valueFrom", {})}
    # drills reach each pod at the address it publishes: its own IP
    advertise = next(e for e in c["env"] if e["name"] == "KILLGATE_ADVERTISE_HOST")
    assert advertise["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["KILLGATE_JWT_SECRET"]["name"] == "killgate-keys"
    assert env["KILLGATE_STATE_KEY"]["name"] == "killgate-keys"
    assert env["KILLGATE_DRILL_JWT_SECRET"]["name"] == "killgate-drill-key"
    assert cfg.admin.auth.hs256_secret_env in env
    assert {k.hs256_secret_env for k in cfg.admin.auth.scoped_keys} <= set(env)


def test_services_policy_budget_and_autoscaler_select_the_gateway() -> None:
    dep = _one("Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()

    services = [d for p in BASE.glob("service*.yaml") for d in _docs(p)]
    by_name = {s["metadata"]["name"]: s for s in services}
    data, admin = by_name["killgate"], by_name["killgate-admin"]
    for svc in (data, admin):
        assert svc["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in data["spec"]["ports"]] == ["data"]
    assert [p["targetPort"] for p in admin["spec"]["ports"]] == ["admin"]

    # the admin port only from labelled clients (and monitoring); the data port open
    pol = _one("NetworkPolicy")
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    rules = pol["spec"]["ingress"]
    admin_rules = [r for r in rules if any(p["port"] == "admin" for p in r["ports"])]
    data_rules = [r for r in rules if any(p["port"] == "data" for p in r["ports"])]
    assert len(admin_rules) == 1 and admin_rules[0]["from"]
    assert all(all(p["port"] == "data" for p in r["ports"]) for r in data_rules)
    assert all(r in admin_rules or "admin" not in str(r) for r in rules)

    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1

    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 3 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]

    # the drill's pods may reach the admin port, and run the drill command
    cron = _one("CronJob")
    tpl = cron["spec"]["jobTemplate"]["spec"]["template"]
    client = admin_rules[0]["from"][0]["podSelector"]["matchLabels"]
    assert client.items() <= tpl["metadata"]["labels"].items()
    script = " ".join(tpl["spec"]["containers"][0]["args"])
    assert "killgate drill kill --route iris-drill" in script
    assert tpl["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_drill_cronjob_mints_a_token_the_gateway_accepts(tmp_path: Path) -> None:
    """Its `killgate token` command, run against the ConfigMap it mounts, gives a token with
    the issuer, audience and scoped key (`drills`) the Deployment's config checks. It holds
    that key's Secret alone, never the main JWT secret (which mints admin tokens)."""
    import jwt

    cron = _one("CronJob")
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols[mounts["/etc/killgate"]]["configMap"]["name"] == "killgate-config"
    script = c["args"][0]
    call = re.search(r'\$\(killgate token (.*?)\)"', script, re.S)
    assert call, script
    cfg = _config_of(_one("ConfigMap"))
    (tmp_path / "config.yaml").write_text(_one("ConfigMap")["data"]["config.yaml"])
    args = shlex.split(call.group(1).replace("/etc/killgate/config.yaml",
                                             str(tmp_path / "config.yaml")))
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {"killgate-drill-key"}
    assert "envFrom" not in c
    key = next(k for k in cfg.admin.auth.scoped_keys if k.name == "drills")
    assert "killgate:admin" not in key.max_scopes
    secret = "s" * 40
    res = cli_fork.run(["token", *args], {**os.environ, str(key.hs256_secret_env): secret},
                       str(ROOT), 30)  # (tests/cli_fork.py: forked, the CLI imported once)
    assert res.returncode == 0, res.stderr
    assert jwt.get_unverified_header(res.stdout.strip())["kid"] == "drills"
    claims = jwt.decode(res.stdout.strip(), secret, algorithms=["HS256"],
                        audience=cfg.admin.auth.audience, issuer=cfg.admin.auth.issuer)
    assert set(claims["scope"].split()) >= {"killgate:drill", "killgate:read"}
    assert set(claims["scope"].split()) <= set(key.max_scopes)
    assert claims["exp"] - claims["iat"] <= 600


# ------------------------------------------------------------------ readiness, for real


def _readyz(admin: str) -> int:
    try:
        with urllib.request.urlopen(admin + "/readyz", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return -1  # not listening yet: also "not ready" to the kubelet


async def test_readyz_stays_503_until_the_kill_state_is_loaded(
        tmp_path: Path, backends, redis_server, gateway_procs) -> None:
    """A new pod whose Redis is unreachable and that has no snapshot (a fresh emptyDir) does
    not know which models are killed: it must not be ready. Once it syncs, the first 200
    from /readyz comes with the kill already enforced."""
    p = await backends(echo_app("v1"))
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        # an instance that was running kills the route (stored in Redis), then goes
        state = redis_state_yaml(f"redis://127.0.0.1:{fwd.port}/0", f"{tmp_path}/old.json",
                                 "kgready")
        env = state_key_env()
        old = write_config(tmp_path, two_versions(p, p, 100, 0), state=state, name="old.yaml")
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            async with running_gateway(old) as g, ClientSession() as s:
                await kill(s, g.admin, scope="route", route="iris")

        fwd.point(None)  # Redis unreachable from here on (nothing listens there)
        state = redis_state_yaml(f"redis://127.0.0.1:{fwd.port}/0", f"{tmp_path}/new.json",
                                 "kgready")
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state, name="new.yaml",
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
        gw = gateway_procs(cfg, env=env)
        seen: list[int] = []

        async def listening_and_unready() -> bool:
            seen.append(await asyncio.to_thread(_readyz, gw.admin))
            return seen.count(503) >= 5

        await wait_until(listening_and_unready, 20, 0.1, "the admin listener, not ready")
        assert set(seen) <= {-1, 503}, seen

        fwd.point(redis_server.port)
        async with ClientSession() as s:
            while (code := await asyncio.to_thread(_readyz, gw.admin)) != 200:
                assert code in (-1, 503)
                await asyncio.sleep(0.02)
            # the moment it is ready, the kill stored in Redis is in force
            assert (await status_of(s, gw.url))[0] == 503
        assert gw.stop() == 0, gw.output()
    finally:
        await fwd.close()


def test_the_readmes_configmap_check_command_works(tmp_path: Path) -> None:
    """README "Deploying" step 4, run as written (from the repository's root)."""
    readme = (ROOT / "README.md").read_text().replace("\n", " ")
    m = re.search(r"`(yq [^`]*> /tmp/k\.yaml) && killgate check /tmp/k\.yaml`", readme)
    assert m, "README step 4 shows no `yq ... && killgate check` command"
    if shutil.which("yq") is None:
        pytest.skip("yq is not installed (apt-get install -y yq): README step 4 not run")
    argv = shlex.split(m.group(1).replace("> /tmp/k.yaml", ""))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr
    (tmp_path / "k.yaml").write_text(out.stdout)
    env = {**os.environ, "KILLGATE_JWT_SECRET": "j" * 40, "KILLGATE_STATE_KEY": "s" * 40,
           "KILLGATE_DRILL_JWT_SECRET": "d" * 40}
    res = cli_fork.run(["check", str(tmp_path / "k.yaml")], env, str(ROOT), 30)
    assert res.returncode == 0 and ": ok (" in res.stdout, res.stderr


def _built_overlay(tmp_path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of the example overlay (its keys.env from the example)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    copy = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    overlay = copy / "overlays" / "example"
    shutil.copy(overlay / "keys.env.example", overlay / "keys.env")
    shutil.copy(overlay / "drill-key.env.example", overlay / "drill-key.env")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_an_apply_never_undoes_the_autoscalers_replica_count(tmp_path: Path) -> None:
    """Kubernetes: with an HPA, leave `spec.replicas` out of the Deployment, or every
    `kubectl apply` sets the count back to it. The README's way to change the config is an
    apply of the overlay: at a traffic peak, with the HPA at 12 pods, it cut the fleet to 3
    at once (a scale-down is no eviction: the PDB does not stop it)."""
    docs = _built_overlay(tmp_path)
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    dep = next(d for d in docs if d["kind"] == target["kind"]
               and d["metadata"]["name"] == target["name"])
    assert "replicas" not in dep["spec"], dep["spec"].get("replicas")
    assert "replicas" not in _one("Deployment")["spec"]
    assert hpa["spec"]["minReplicas"] >= 3


def test_prometheus_is_told_to_scrape_each_pod_on_the_admin_port() -> None:
    """Each pod is one instance with its own counters: the pods carry the scrape
    annotations (the admin port, /metrics), and no Service does (a scrape through a Service
    reaches a different pod each time: counters would jump between instances' values,
    each step down a counter reset to rate())."""
    dep = _one("Deployment")
    pod = dep["spec"]["template"]
    ann = pod["metadata"].get("annotations", {})
    assert ann.get("prometheus.io/scrape") == "true", ann
    assert ann.get("prometheus.io/path") == "/metrics", ann
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ann.get("prometheus.io/port") == str(ports["admin"]), ann
    for p in BASE.glob("service*.yaml"):
        for doc in _docs(p):
            svc_ann = doc["metadata"].get("annotations", {})
            assert "prometheus.io/scrape" not in svc_ann, p.name
