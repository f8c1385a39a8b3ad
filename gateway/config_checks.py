"""The config checks pydantic cannot express per field: across fields and across routes.

Owns the listener ports, the connection caps, the admin auth settings' coherence, the state
and audit keys, unique route and version names, stables, drill routes (they mirror a
production route), ambiguous route overlaps, and hands routes[].shadow, telemetry and alerts to their
sections' own checks. Every problem names its YAML path. Pure; the schema only.
"""

from __future__ import annotations

from gateway import config_shadow, config_telemetry
from gateway.config import Config, parse_listen
from gateway.config_routes import HealthConfig, case_fold
from gateway.config_schema import duration_text
from gateway.errors import Problem

__all__ = ["approval_gaps", "doubled_prefixes", "otlp_grpc_port", "semantic_problems",
           "ungated_shadows"]


def approval_gaps(cfg: Config) -> list[str]:
    """Gates another write walks around (for `killgate check`'s notes, not errors): a
    `weights` call giving the canary 100 % is a promotion in all but name."""
    a = cfg.approvals
    if a.promote > a.weights:
        return [f"approvals.promote is {a.promote} but approvals.weights is {a.weights}: a "
                "`weights` call that gives one version 100 % moves the traffic a promotion "
                "would, with fewer principals; set approvals.weights as high"]
    return []


def otlp_grpc_port(cfg: Config) -> list[str]:
    """An OTLP endpoint on 4317, OTLP/gRPC's port (for `killgate check`'s notes): killgate
    exports OTLP over HTTP/protobuf (4318), so every export there fails, seen only later as
    killgate_otel_dropped_total (a new user's most likely mix-up: the collector's docs list
    4317 first)."""
    from urllib.parse import urlsplit

    url = cfg.telemetry.otlp_endpoint
    try:
        port = urlsplit(url).port if url else None
    except ValueError:
        return []
    if port != 4317:
        return []
    return [f"telemetry.otlp_endpoint {url!r} names port 4317, OTLP/gRPC's: killgate "
            "exports OTLP over HTTP/protobuf, which collectors take on 4318 (every export "
            "to a gRPC port fails); use the collector's HTTP endpoint"]


def doubled_prefixes(cfg: Config) -> list[str]:
    """Version urls whose path ends in their route's `path_prefix` (for `killgate check`'s
    notes): the request path is appended to the url's, so an OpenAI SDK's base URL pasted as
    `url: http://vllm:8000/v1` under `path_prefix: /v1` sends `/v1/v1/chat/completions`,
    and the backend's 404 is all a client sees (a new user's pass)."""
    from urllib.parse import urlsplit

    out = []
    for i, rc in enumerate(cfg.routes):
        prefix = (rc.match.path_prefix or "").rstrip("/")
        for j, v in enumerate(rc.versions):
            path = urlsplit(v.url).path.rstrip("/")
            if prefix and path.endswith(prefix):
                out.append(f"routes[{i}].versions[{j}].url {v.url!r} ends in the route's "
                           f"path_prefix {prefix!r}: the request path is appended to the "
                           f"url's, so {prefix}/... goes to {path}{prefix}/...; if the server "
                           f"serves {prefix} itself, drop it from the url")
    return out


def ungated_shadows(cfg: Config) -> list[str]:
    """Shadows progressive delivery rolls out with no agreement gate (for `killgate
    check`'s notes): with `analysis.steps`, a route's shadow is its canary, and without
    `min_shadow_agreement` its first step of live traffic comes at once."""
    out = []
    for i, rc in enumerate(cfg.routes):
        a, sh = rc.analysis, rc.shadow
        if (a is not None and a.steps and sh is not None and a.min_shadow_agreement is None
                and sh.version != rc.stable and len(rc.versions) == 2):
            out.append(f"routes[{i}] ({rc.name}): analysis.steps with shadow {sh.version!r} "
                       "and no analysis.min_shadow_agreement: progressive delivery gives "
                       f"{sh.version!r} its first step of live traffic at once, before any "
                       "comparison; set min_shadow_agreement (and min_shadow_compared) to "
                       "let its agreement with the stable open the way")
    return out


def _key_problems(cfg: Config) -> list[Problem]:
    """The state and audit keys: one source each, and a signing key with redis."""
    st = cfg.state
    out: list[Problem] = []
    for name in ("signing_key", "previous_signing_key", "audit_key", "previous_audit_key"):
        if getattr(st, f"{name}_env") and getattr(st, f"{name}_file"):
            out.append(Problem(f"state.{name}_file", f"give {name}_env or {name}_file, not both"))
    signing = st.signing_key_env or st.signing_key_file
    if st.backend == "redis" and not signing:
        out.append(Problem(
            "state.signing_key_env",
            "required with backend redis (or signing_key_file): without it, anyone who can "
            "write to Redis could lift a kill. Name an environment variable that holds the "
            "same secret of at least 32 bytes on every instance, e.g. `signing_key_env: "
            "KILLGATE_STATE_KEY` and `export KILLGATE_STATE_KEY=$(openssl rand -hex 32)`"))
    if not signing and (st.previous_signing_key_env or st.previous_signing_key_file):
        out.append(Problem("state.previous_signing_key_env",
                           "needs signing_key_env or signing_key_file (the key that signs)"))
    if not (st.audit_key_env or st.audit_key_file) and (
            st.previous_audit_key_env or st.previous_audit_key_file):
        out.append(Problem("state.previous_audit_key_env",
                           "needs audit_key_env or audit_key_file (the key that signs)"))
    return out


def _clock_problems(cfg: Config) -> list[Problem]:
    """The state's clocks against each other. The sync loop polls once per poll_interval,
    and both the staleness clock's reset and the heartbeat come after that poll: a
    max_staleness inside one poll went stale on a healthy store (with fail_closed every
    route answered 503 killed for most of each poll), and a lease inside two beats dropped
    live instances from receipts between their beats (a kill's `applied` counted 1 of 2)."""
    st = cfg.state
    out: list[Problem] = []
    if st.max_staleness < 2 * st.poll_interval:
        out.append(Problem(
            "state.max_staleness",
            f"must be at least twice poll_interval ({2 * st.poll_interval:g}s): the store is "
            "read once per poll, so the state would go stale between the polls of a healthy "
            "store (under fail_closed, every route answering 503 killed)"))
    beat = max(st.heartbeat_interval, st.poll_interval)
    if st.instance_lease < 2 * beat:
        which = "heartbeat_interval" if beat == st.heartbeat_interval else \
            "poll_interval (a heartbeat follows a poll)"
        out.append(Problem(
            "state.instance_lease",
            f"must be at least twice {which} ({2 * beat:g}s): an instance not heard from "
            "within the lease counts as gone, so between its beats a live instance would be "
            "left out of every kill's receipt (`applied`), the fleet and `killgate status`"))
    return out


def semantic_problems(cfg: Config) -> list[Problem]:
    """Cross-field checks pydantic cannot express per field."""
    out: list[Problem] = []
    _data_host, data_port = parse_listen(cfg.listen)
    _, admin_port = parse_listen(cfg.admin.listen)
    if data_port != 0 and admin_port == data_port:
        out.append(Problem("admin.listen", f"must not use the data-plane port {data_port}"))
    srv = cfg.server
    if srv.model_peek_memory < srv.model_peek_bytes:
        out.append(Problem("server.model_peek_memory",
                           f"must be >= server.model_peek_bytes ({srv.model_peek_bytes}): "
                           "a body's peek would never fit"))
    if srv.max_connections_per_client > srv.max_connections:
        out.append(Problem("server.max_connections_per_client",
                           f"must be <= server.max_connections ({srv.max_connections}), "
                           "or 0 for no per-client cap"))
    auth = cfg.admin.auth
    sources = [auth.hs256_secret_file, auth.public_key_file, auth.jwks_url]
    hs = [a for a in auth.algorithms if a.startswith("HS")]
    asym = [a for a in auth.algorithms if not a.startswith("HS")]
    if hs and asym:
        out.append(Problem("admin.auth.algorithms",
                           "mixes HMAC and public-key algorithms; a key is used with one type only"))
    if asym and not (auth.public_key_file or auth.jwks_url):
        out.append(Problem("admin.auth", f"{asym[0]} needs public_key_file or jwks_url"))
    if hs and (auth.public_key_file or auth.jwks_url):
        out.append(Problem("admin.auth.algorithms",
                           "HS* algorithms cannot be used with public_key_file or jwks_url"))
    if sum(s is not None for s in sources) > 1:
        out.append(Problem("admin.auth", "give only one of hs256_secret_file, public_key_file, "
                                         "jwks_url"))
    out += _key_problems(cfg)
    out += _clock_problems(cfg)
    seen_routes: dict[str, int] = {}
    for i, r in enumerate(cfg.routes):
        base = f"routes[{i}]"
        if r.name in seen_routes:
            out.append(Problem(f"{base}.name",
                               f"duplicate route name {r.name!r} (also routes[{seen_routes[r.name]}])"))
        seen_routes.setdefault(r.name, i)
        if r.match.keys() == 0:
            out.append(Problem(f"{base}.match",
                               "needs at least one of path_prefix, host, header, model"))
        names: dict[str, int] = {}
        for j, v in enumerate(r.versions):
            if v.name in names:
                out.append(Problem(f"{base}.versions[{j}].name",
                                   f"duplicate version name {v.name!r} in route {r.name!r}"))
            names.setdefault(v.name, j)
        if r.stable not in names:
            out.append(Problem(f"{base}.stable",
                               f"names no version of this route ({', '.join(names)})"))
        if all(v.weight == 0 for v in r.versions) and r.stable not in names:
            out.append(Problem(f"{base}.versions", "every weight is 0 and there is no stable"))
        if r.sticky and r.allow_pin and r.sticky.header == "x-killgate-pin":
            out.append(Problem(f"{base}.sticky.header", "must not be x-killgate-pin"))
        if r.health and r.health.timeout >= r.health.interval:
            out.append(Problem(f"{base}.health.timeout", _health_timeout(r.health)))
        if r.analysis is not None and len(r.versions) != 2:
            names_ = ", ".join(v.name for v in r.versions[:8]) + (
                ", ..." if len(r.versions) > 8 else "")
            out.append(Problem(f"{base}.analysis", (
                "canary analysis needs exactly two versions: the stable and one canary (or "
                f"the shadow its gate judges); this route has {len(r.versions)} ({names_})"
                + ("; the shadow counts" if r.shadow else "") + ": remove `analysis`, or "
                "the versions it should not judge")))
        if r.timeouts.connect > r.timeouts.total:
            out.append(Problem(f"{base}.timeouts.connect", "must not exceed timeouts.total"))
    out.extend(_drill_routes(cfg))
    out.extend(_overlaps(cfg))
    declared: dict[str, list[int]] = {}  # version name -> the routes declaring it, in order
    for i, r in enumerate(cfg.routes):
        for v in r.versions:
            declared.setdefault(v.name, []).append(i)
    for i, r in enumerate(cfg.routes):
        # (the other route declaring the shadow's version, the last one as before; a dict
        # of every other route's versions for each route was quadratic: 2,900 routes, 14 s)
        owner = [k for k in declared.get(r.shadow.version, []) if k != i] if r.shadow else []
        others = {r.shadow.version: cfg.routes[owner[-1]].name} if r.shadow and owner else {}
        out.extend(Problem(path, msg) for path, msg in config_shadow.problems(i, r, others))
    out.extend(Problem(path, msg) for path, msg in config_telemetry.problems(
        cfg.telemetry, cfg.alerts, (r.name for r in cfg.routes)))
    return out


def _health_timeout(h: HealthConfig) -> str:
    """The values compared, and which was a default: `health: {interval: 1s}` alone was told
    its timeout, a key it never wrote (1s by default), must be shorter."""
    def said(key: str, value: float) -> str:
        return duration_text(value) + ("" if key in h.model_fields_set else ", the default")
    return (f"must be shorter than health.interval (timeout {said('timeout', h.timeout)}; "
            f"interval {said('interval', h.interval)}): lower timeout (e.g. timeout: "
            f"{duration_text(h.interval / 2)}) or raise interval")


def _drill_routes(cfg: Config) -> list[Problem]:
    """A drill route mirrors a production route: the same versions (names and backends),
    so a drill on it exercises what users are served by."""
    out: list[Problem] = []
    for i, r in enumerate(cfg.routes):
        if r.drill_for is None:
            continue
        where = f"routes[{i}].drill_for"
        prod = cfg.route(r.drill_for)
        if prod is None or prod is r:
            out.append(Problem(where, f"names no other route ({r.drill_for!r})"))
        elif prod.drill_for is not None:
            out.append(Problem(where, f"{prod.name!r} is itself a drill route"))
        elif {(v.name, v.url) for v in r.versions} != {(v.name, v.url) for v in prod.versions}:
            out.append(Problem(f"routes[{i}].versions",
                               f"a drill route serves the same versions as {prod.name!r} "
                               "(the same names and urls)"))
    return out


def _overlaps(cfg: Config) -> list[Problem]:
    """Two equally specific routes that can match the same request are ambiguous. Only
    routes of the same specificity and the same prefix (case folded) are compared: every
    pair was, 2,900 routes took 40 s of CPU holding the GIL (a reload shares it with the
    data plane's loop)."""
    out: list[Problem] = []
    routes = cfg.routes
    groups: dict[tuple[int, int, str | None], list[int]] = {}
    for i, r in enumerate(routes):
        m = r.match
        prefix = None if m.path_prefix is None else case_fold(m.path_prefix)
        groups.setdefault((len(m.path_prefix or ""), m.keys(), prefix), []).append(i)
    pairs = sorted((i, j) for group in groups.values()
                   for n, i in enumerate(group) for j in group[n + 1:])
    for i, j in pairs:
        a, b = routes[i].match, routes[j].match
        if (len(a.path_prefix or ""), a.keys()) != (len(b.path_prefix or ""), b.keys()):
            continue
        pa, pb = a.path_prefix, b.path_prefix
        if pa is not None and pb is not None and not (a.case_sensitive and b.case_sensitive):
            pa, pb = case_fold(pa), case_fold(pb)
        if pa != pb:
            continue  # same length, different strings: disjoint
        if a.host and b.host and a.host != b.host:
            continue
        if a.model and b.model and a.model != b.model:
            continue
        if a.header and b.header and any(
            k in b.header and b.header[k] != val for k, val in a.header.items()
        ):
            continue
        out.append(Problem(f"routes[{j}].match",
                           f"as specific as routes[{i}] ({routes[i].name!r}) and can match "
                           "the same requests; make one more specific"))
    return out
