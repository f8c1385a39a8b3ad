"""The CLI's commands over config files: `token` (mint an HS256 admin token) and `diff`
(what a file would change against the running gateway, or against another file).

Owns their arguments and output; `diff` exits 2 when something would change. Reads the
config with gateway/configfile.py; `diff` asks the admin API for the running config
through cli/client.py. Secrets are never printed (the diff shows them redacted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from gateway.cli.client import ClientError, api, run, table
from gateway.cli.diffchecks import kills_by_routing, latched_routes

__all__ = ["add_config_commands"]


def _token(args: argparse.Namespace) -> int:
    from gateway.admin.auth import SCOPES, printable_subject
    from gateway.admin.tokens import MIN_SECRET, mint
    from gateway.config import DEFAULT_SECRET_ENV, AuthConfig, parse_duration
    from gateway.configfile import load_config
    from gateway.errors import ConfigError
    from gateway.filemodes import key_env, read_key_file

    unknown = [s for s in args.scope.split() if s not in SCOPES]
    if unknown:  # (a typo would mint a token every call refuses with 403)
        apart = (" (scopes are separated by blanks: --scope \"killgate:kill killgate:read\")"
                 if "," in unknown[0] else "")
        raise ClientError(f"unknown scope {unknown[0]!r}{apart}; known: {', '.join(SCOPES)}")
    if not args.scope.split():
        raise ClientError(f"--scope is empty: a token without a scope can do nothing; known: "
                          f"{', '.join(SCOPES)}")
    issuer = audience = None
    env = args.secret_env
    if env and env not in os.environ and not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", env):
        # (`--secret-env "$SECRET"`: the secret itself, which 'no secret: set ...' printed)
        raise ClientError("--secret-env names no variable that is set, and what it was given "
                          "(not shown) does not look like a variable's name: give the name, "
                          "such as KILLGATE_JWT_SECRET, not the secret")
    kid = None
    if args.key is not None and (not args.config or args.secret_env):
        raise ClientError("--key NAME needs -c FILE (the key's secret and scopes are in "
                          "admin.auth.scoped_keys) and no --secret-env")
    lifetime = AuthConfig().max_token_lifetime
    hint = "or give -c FILE naming the secret"
    if args.config:
        try:
            loaded = load_config(args.config)
            auth = loaded.config.admin.auth
            lifetime = auth.max_token_lifetime
            issuer, audience = auth.issuer, auth.audience
            if args.key is not None:
                secret, source, env, hint = _scoped_secret(args, auth, loaded.resolve)
                kid = args.key
            elif "HS256" not in auth.algorithms:
                # (it said "no secret: set KILLGATE_JWT_SECRET": a token minted so is refused)
                raise ClientError(
                    f"{args.config} takes tokens signed with {', '.join(auth.algorithms)} "
                    f"(admin.auth.{'jwks_url' if auth.jwks_url else 'public_key_file'}), "
                    "not HS256, the only kind `killgate token` mints: get one from the "
                    "identity provider or private key that signs them, or add a scoped "
                    "key (admin.auth.scoped_keys, then --key NAME)")
            elif auth.hs256_secret_file:
                source = str(loaded.resolve(auth.hs256_secret_file))
                try:
                    secret = read_key_file(Path(source)).decode().strip()
                except UnicodeDecodeError:
                    raise ClientError(f"{source}: not UTF-8 text") from None
            else:
                env = env or auth.secret_env
                secret = key_env(env)
                hint = ("named by --secret-env" if args.secret_env
                        else f"named by admin.auth in {args.config}")
        except ConfigError as exc:
            raise ClientError("invalid config: " + "; ".join(map(str, exc.problems))) from None
        except OSError as exc:
            # (not the OSError's repr: `[Errno 2] No such file or directory: '...'`)
            raise ClientError(f"cannot read the secret file {exc.filename or ''} that "
                              f"{args.config} names: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ClientError(str(exc)) from None
    else:
        env = env or DEFAULT_SECRET_ENV
        try:
            secret = key_env(env)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        issuer, audience = args.issuer, args.audience
    if not secret:
        raise ClientError(f"no secret: set {env} ({hint})")
    if len(secret.encode()) < MIN_SECRET:  # (which secret, and how to make a good one)
        where = (source if args.config and (auth.hs256_secret_file or kid is not None)
                 else f"${env}")
        raise ClientError(f"the secret in {where} is {len(secret.encode())} bytes; an HMAC "
                          f"secret must be at least {MIN_SECRET} bytes, e.g. "
                          "`openssl rand -hex 32`, the same the gateway reads")
    if not args.subject.strip():
        raise ClientError("--subject is empty: the gateway refuses a token without 'sub'")
    if not printable_subject(args.subject):
        raise ClientError("--subject holds a control or bidirectional character: the gateway "
                          "refuses such a token (the subject is shown as the actor everywhere)")
    try:
        ttl = parse_duration(args.ttl)
        if ttl < 1:
            raise ValueError(f"--ttl {args.ttl} is shorter than a second: the token would "
                             "be expired when printed")
        if ttl > lifetime:
            raise ValueError(f"--ttl {args.ttl} is longer than admin.auth.max_token_lifetime "
                             f"({lifetime:g}s): the gateway would refuse the token")
        print(mint(secret, args.subject, args.scope, ttl, issuer, audience, kid))
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    return 0


def _scoped_secret(args: argparse.Namespace, auth: Any,
                   resolve: Any) -> tuple[str, str, str, str]:
    """(secret, where it is, its variable, a hint) of the scoped key `--key` names, once
    `--scope` is within what the key may grant (else the gateway would refuse the token)."""
    from gateway.admin.scopedkeys import read_secret

    keys = {k.name: k for k in auth.scoped_keys}
    key = keys.get(args.key)
    if key is None:
        known = ", ".join(keys) or "none"
        raise ClientError(f"--key {args.key!r}: no such key in admin.auth.scoped_keys of "
                          f"{args.config} (keys: {known})")
    beyond = sorted(set(args.scope.split()) - set(key.max_scopes))
    if beyond:
        raise ClientError(f"--scope {' '.join(beyond)}: the key {key.name!r} may grant only "
                          f"{' '.join(key.max_scopes)}; the gateway would refuse the token")
    secret, where = read_secret(key, resolve)
    if key.hs256_secret_file is not None:
        path = str(resolve(key.hs256_secret_file))
        return secret, path, f"a secret in {path}", f"{where}, of the key {key.name}"
    env = key.hs256_secret_env or ""
    return secret, f"${env}", env, f"named by admin.auth.scoped_keys ({key.name}) in {args.config}"


def _diff(args: argparse.Namespace) -> int:
    """What FILE would change against a running gateway (or --against FILE2): exit 2 if any."""
    from gateway.configfile import load_config
    from gateway.domain.diff import config_dict, diff_configs, diff_rows, restart_keys
    from gateway.errors import ConfigError

    latched: list[str] = []
    dropped: list[dict[str, Any]] = []
    revived: list[dict[str, Any]] = []
    around: list[dict[str, Any]] = []
    try:
        loaded = load_config(args.file)
        new, new_digest = config_dict(loaded.config), loaded.digest
        old_digest: str | None = None
        if args.against:
            against = load_config(args.against)
            old, old_digest = config_dict(against.config), against.digest
            where = args.against
        else:
            running = api(args, "GET", "/v1/config", shape={"digest": str, "config": dict})
            old, old_digest = running["config"], running["digest"]
            where = "the running gateway"
            status = api(args, "GET", "/v1/status", shape={"routes": dict, "kills": list})
            latched = latched_routes(status, loaded)
            dropped, revived = kills_by_routing(status["kills"], loaded)
            from gateway.domain.killreach import kills_routed_around
            around = kills_routed_around([k for k in status["kills"] if isinstance(k, dict)],
                                         [r for r in old.get("routes", ()) if isinstance(r, dict)],
                                         new.get("routes", []))
    except ConfigError as exc:
        raise ClientError("invalid config: " + "; ".join(str(p) for p in exc.problems)) from None
    d = diff_configs(old, new)
    changed = bool(d["routes"] or d["settings"])
    later = restart_keys(d)
    if args.json:
        print(json.dumps({"changed": changed, **d, **({"latched": latched} if latched else {}),
                          **({"restart_required": later} if later else {}),
                          **({"kills_unrouted": dropped} if dropped else {}),
                          **({"kills_put_in_force": revived} if revived else {}),
                          **({"kills_routed_around": around} if around else {})}, indent=2))
    elif not changed:
        print(f"no changes against {where}")
        if not args.against and old_digest == new_digest:
            print(f"note: the gateway already runs exactly this file's content "
                  f"({new_digest[:19]}…): it reloads its config file when the file changes "
                  "(unless server.watch_config is false) and on SIGHUP, so an edit is live "
                  "before `killgate diff` runs; to review an edit before it goes live, edit a "
                  "copy and diff the copy")
        if old_digest is not None and old_digest != new_digest:
            print("note: the files differ, in comments or in secrets (shown redacted here: a "
                  "changed password or webhook URL is not visible)")
    else:
        print(f"{args.file} against {where}:")
        print(table([["route", "change", "before", "after"], *diff_rows(d)]))
    if later and not args.json:
        print("\nthese settings apply only when the gateway restarts (a reload leaves them as "
              "it started; `killgate status` then says RESTART REQUIRED): " + ", ".join(later))
    if latched and not args.json:
        print("\nlatched by a runtime override (the file's weights and stable wait for "
              "`killgate release ROUTE`): " + ", ".join(latched))
    if dropped and not args.json:
        print("\nKILLS THIS FILE LEAVES STOPPING NOTHING (they stay in force, but the file has "
              "no such name: requests go to whatever else it matches them to, a renamed route "
              "or version included):\n" + table([["kill", "by", "reason"], *(
                  [k["kill"], k["by"], k["reason"]] for k in dropped)]))
    if revived and not args.json:
        print("\nKILLS THIS FILE PUTS IN FORCE (made while the running config had no such "
              "name, by an alert or on another instance: the route or version it adds is "
              "killed as soon as the file is live):\n" + table([["kill", "by", "reason"], *(
                  [k["kill"], k["by"], k["reason"]] for k in revived)]))
    if around and not args.json:
        print("\nKILLS THIS FILE MAY ROUTE AROUND (each stays in force on its name, but "
              "requests it stops now may be served):\n" + table([["kill", "by", "reason", "how"], *(
                  [k["kill"], k["by"], k["reason"], "; ".join(k["how"])] for k in around)]))
    return 2 if changed else 0


def add_config_commands(cmd: Any, sub: Any) -> None:
    """`cmd(name, fn, help)` adds a subcommand with the client options (cli/admin.py);
    `token` talks to no gateway and takes none of them."""
    p = cmd("diff", _diff, "what a config file would change (exit 2 when something would)")
    p.add_argument("file", help="the config file (YAML) you would deploy")
    p.add_argument("--against", metavar="FILE2",
                   help="compare with another file instead of the running gateway")
    p = sub.add_parser("token", help="mint an HS256 admin token (development and tests)")
    p.add_argument("--subject", required=True,
                   help="who the token is for (shown as the actor in the audit trail)")
    p.add_argument("--scope", required=True,  # (every scope of admin.auth.SCOPES)
                   help="space-separated: killgate:read, killgate:kill, killgate:rollout, "
                        "killgate:alert (Alertmanager's webhook only), killgate:drill, "
                        "killgate:admin (all but break-glass), killgate:breakglass; "
                        'e.g. "killgate:kill killgate:read"')
    p.add_argument("--ttl", default="15m",
                   help="how long it is valid: a duration with its unit (15m, 1h; default 15m)")
    p.add_argument("-c", "--config", help="take issuer, audience and secret from this config")
    p.add_argument("--secret-env", help="environment variable holding the secret "
                                         "(default KILLGATE_JWT_SECRET)")
    p.add_argument("--key", metavar="NAME",
                   help="with -c: sign with the scoped key NAME of admin.auth.scoped_keys "
                        "(its secret; the token names it as `kid` and may carry only its "
                        "max_scopes)")
    p.add_argument("--issuer", default="killgate", help="without -c (default killgate)")
    p.add_argument("--audience", default="killgate-admin",
                   help="without -c (default killgate-admin)")
    p.set_defaults(fn=run(_token))
