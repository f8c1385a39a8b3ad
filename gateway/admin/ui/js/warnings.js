// What must not be left to the operator to notice in the panels below: the lines
// `killgate status` prints in capitals (cli/statuswarn.py, cli/admin.py), drawn at the top
// of the page from the same documents (GET /v1/status, GET /v1/fleet), worst first. The
// page must never look green while the CLI warns.

import {badge, h, render} from "./dom.js";
import {notDurable} from "./fleet.js";

const secs = (ms) => (typeof ms === "number" ? `${(ms / 1000).toFixed(1)} s` : "?");

function storeLines(sd) {
  const store = sd.store || {};
  const out = [];
  const routes = Object.values(sd.routes || {});
  if (store.unverifiable) {
    out.push(["bad", "STATE UNVERIFIABLE", `${store.unverifiable}. NOT READY (/readyz 503 state_unverifiable): ` +
      "load balancers stop sending it traffic; the kills it holds stay enforced. Compare store.verification.key_id " +
      "with another instance's (`killgate status --json`), put the fleet's key in state.signing_key_env, and " +
      "restart this instance"]);
  }
  if (routes.some((r) => r && r.killed === "state_unknown")) {
    out.push(["bad", "STATE UNKNOWN", "this instance has not loaded the fleet's kills (no sync with the store " +
      "yet, no snapshot): every matched route answers its fallback, else 503 state_unknown, until it syncs; " +
      "check that it can reach the store"]);
  } else if (store.synced === false && store.from_snapshot) {
    out.push(["bad", "NOT SYNCED", `enforcing the kills of its snapshot (generation ${sd.generation}) since it ` +
      "has not reached the store: kills and unkills made since are NOT in force here"]);
  } else if (store.synced === false && store.backend && store.backend !== "local") {
    out.push(["bad", "NOT SYNCED", "routing on the config alone (state.ready_without_state): kills made while " +
      "this instance was away are NOT in force here until it syncs"]);
  }
  if (store.stale) {
    out.push(["bad", "STALE", `no sync with the store for ${secs(store.staleness_ms)} (more than max_staleness, ` +
      `${secs(store.max_staleness_ms)}): kills and unkills made since may NOT be in force here` +
      (store.fail_closed ? "; every route answers killed (on_unavailable fail_closed) until the store answers" : "")]);
  }
  if (store.connected === false && store.last_error) out.push(["bad", "STORE ERROR", String(store.last_error)]);
  // (redis's own min-replicas-to-write refuses every write, -NOREPLICAS: its reads work)
  if (store.connected && store.writes_refused) {
    out.push(["bad", "WRITES REFUSED", "redis's min-replicas-to-write refuses every write: kills cannot be " +
      "made through the store; use killgate kill --local (Kill on this instance only…); bring a replica back. " +
      String(store.writes_refused)]);
  }
  // (state.min_replicas: as `killgate status`'s store line says it, cli/statusstore.py)
  if (notDurable(store)) {
    out.push(["bad", "NOT DURABLE", `the store's primary has ${store.replicas.connected} of ${store.replicas.required} ` +
      "replicas (min_replicas): kills are in force but answered 503 not_durable; bring a replica back"]);
  } else if (store.connected && store.replicas_unknown) {
    out.push(["warn", "STORE REPLICAS UNKNOWN", `(state.min_replicas) ${store.replicas_unknown}; a write says it ` +
      "is not durable only in its answer (503 not_durable)"]);
  }
  // emergency local kills (POST /v1/kill?local=1, an alert's kill in a store outage): in
  // force here only, not the fleet's until merged (as `killgate status` says them)
  const local = store.local_kills || {};
  for (const k of Array.isArray(local.kills) ? local.kills : []) {
    out.push(["bad", "LOCAL KILL NOT IN STORE", `${k.kill} (taken ${k.time} by ${k.actor} on ${k.instance}): ` +
      "enforced on this instance only, NOT by the rest of the fleet until the store answers and it is merged; " +
      "send the same kill to each instance's admin address (Kill… there, or `killgate kill --local`), or fix the store"]);
  }
  if (local.refused) {
    out.push(["bad", "LOCAL KILLS REFUSED", `${local.refused}: none of its kills is enforced or merged (signed ` +
      "with another key, or edited); the next local kill moves the journal aside to .refused"]);
  }
  const snap = store.snapshot || {};
  if (snap.ok === false) {
    out.push(["bad", "SNAPSHOT NOT WRITTEN", `${snap.error}; the file holds generation ${snap.generation}: a restart ` +
      "while the store cannot be reached (or lost its state) would enforce that, without the changes since"]);
  }
  if (snap.kills_only) {
    out.push(["bad", "SNAPSHOT KILLS ONLY", `the snapshot read at start-up was not trusted (${snap.kills_only}): ` +
      "its kills are enforced, its overrides, weights and history were refused; lift a kill you do not want " +
      "with an unkill"]);
  }
  if (snap.refused) {
    out.push(["bad", "SNAPSHOT REFUSED", `the snapshot read at start-up was refused whole (${snap.refused}): ` +
      "nothing of it is enforced; this instance started as one without a snapshot (its next write replaces the file)"]);
  }
  const ver = store.verification || {};
  if (ver.unverified_total) {
    const last = ver.last_unverified || {};
    // each cause's count and latest, strongest evidence first (as `killgate status` says
    // them: the last refusal alone let a made-up key id hide a wrong-signature write)
    const causes = ver.by_cause && typeof ver.by_cause === "object" ? ver.by_cause
      : {[String(last.problem).includes("signed with an unknown key id") ? "unknown_key_id" : "other"]: 1};
    const lasts = ver.last_by_cause || {};
    const words = {bad_signature: "wrong signature", unsigned: "unsigned", unknown_key_id: "unknown key id", other: "other"};
    const seen = ver.by_cause && ver.last_by_cause
      ? Object.keys(words).filter((c) => causes[c]).map((c) =>
        `${words[c]} ${causes[c]}, last: ${(lasts[c] || {}).kind}: ${(lasts[c] || {}).problem}`).join("; ")
      : `last: ${last.kind}: ${last.problem}`;
    const why = [];
    if (Object.keys(causes).some((c) => c !== "unknown_key_id" && causes[c])) {
      why.push("something wrote to the store without the signing key");
    }
    if (causes.unknown_key_id) {
      why.push("a key id this instance does not hold: the state key was changed without " +
        "`state.previous_signing_key_env` naming the old one, or instances run different keys " +
        "(each refuses the others' writes), or someone wrote it without the key (a forger can " +
        "name any key id). This instance holds key id(s) " +
        ([ver.key_id, ver.previous_key_id].filter(Boolean).map((k) => `'${k}'`).join(", ") || "?") +
        "; each instance's `killgate status --json` names its own (store.verification.key_id): " +
        "if none of yours runs or ran the refused key id, treat it as TAMPERING");
    }
    out.push(["bad", "UNVERIFIED", `${ver.unverified_total} value(s) read from the store failed verification ` +
      `and were refused (${seen}): ` + (why.join("; and ") || "something wrote to the store without the signing key")]);
  }
  // refused for a key id the fleet retired in a rotation: most likely its left-overs, not
  // tampering (as `killgate status` says it: RETIRED KEY)
  const retired = ver.retired_key && typeof ver.retired_key === "object" ? ver.retired_key : {};
  const nRetired = Object.values(retired).reduce((a, n) => a + (typeof n === "number" ? n : 0), 0);
  if (nRetired) {
    const lr = ver.last_retired_key || {};
    out.push(["warn", "RETIRED KEY", `${nRetired} value(s) read from the store were refused for naming a key id ` +
      `the fleet retired in a key rotation (${(ver.retired_key_ids || []).map((k) => `'${k}'`).join(", ") || "?"}; ` +
      `last: ${lr.kind}: ${lr.problem}): most likely written before the rotation (counts and heartbeats of ` +
      "instances replaced or crashed since, an idempotency record: each is refused once); not counted as " +
      "tampering. If they keep coming, an instance still signs with the retired key (compare each instance's " +
      "store.verification.key_id) or someone holding it writes to the store"]);
  }
  const audit = store.audit || {};
  if (audit.trail_lost) {
    const lost = audit.trail_lost;
    const by = typeof lost === "object" && lost.reseeded_by ? `by ${lost.reseeded_by} ` : "";
    out.push(["bad", "AUDIT TRAIL LOST", `the store lost audit events the fleet had anchored (a flush, or a backup restored; re-seeded ${by}at ` +
      `${typeof lost === "object" ? lost.time : lost}); \`killgate audit verify\` names the gap: ${lostWhere(audit.mirror)}`]);
  }
  const mirror = audit.mirror || {};
  const refused = mirror.refused || mirror.error;
  if (refused) {
    out.push(["bad", "AUDIT MIRROR STOPPED", `(${mirror.path}): ${typeof refused === "object" ? refused.problem : refused}`]);
  }
  return out;
}

// where the events before a trail loss may still be (gateway/cli/statuswarn.py `_lost_where`)
function lostWhere(mirror) {
  if (mirror && mirror.path) {
    return `compare with the audit mirror (${mirror.path}: \`killgate audit verify --mirror ${mirror.path}\`)`;
  }
  return "this instance keeps no audit mirror (state.audit_mirror), so the events before the gap are only " +
    "in a backup of the store, if one was made; set state.audit_mirror to keep a local copy from now on";
}

function configLines(sd) {
  const cfg = sd.config || {};
  const out = [];
  if (cfg.last_error) {
    out.push(["bad", "LAST RELOAD FAILED", `${cfg.last_error} (the file on disk is not what this instance runs)`]);
  }
  if (cfg.waiting) out.push(["warn", "RELOAD WAITING", String(cfg.waiting)]);
  if (Array.isArray(cfg.restart_required) && cfg.restart_required.length) {
    out.push(["warn", "RESTART REQUIRED", `for: ${cfg.restart_required.join(", ")}`]);
  }
  // (as `killgate status` prints them: RELOAD WARNING, AUDIT PENDING)
  for (const w of Array.isArray(cfg.warnings) ? cfg.warnings : []) {
    if (typeof w === "string") out.push(["warn", "RELOAD WARNING", w]);
  }
  const cut = (d) => `${String(d).slice(0, 19)}…`;
  for (const a of Array.isArray(cfg.audit_pending) ? cfg.audit_pending : []) {
    if (!a || typeof a !== "object") continue;
    out.push(["bad", "AUDIT PENDING", `config.reload ${cut(a.from)} -> ${cut(a.to)} changed at ` +
      `${a.changed_at}, not yet recorded (${a.tries} tries; the store: ${a.error}): the trail has no event ` +
      "for this change until the store answers (kept on disk meanwhile: the next start records it)"]);
  }
  const dropped = cfg.audit_dropped;
  if (dropped && typeof dropped === "object") {
    const last = dropped.last && typeof dropped.last === "object" ? dropped.last : {};
    out.push(["bad", "AUDIT DROPPED", `${dropped.count} config change(s) since this instance started are in ` +
      `no audit event (the last: ${cut(last.from)} -> ${cut(last.to)} changed at ${last.changed_at}; ` +
      `${last.error || "more changes waited for the store than are kept"}); the log says each`]);
  }
  return out;
}

// A latched override that gives traffic to versions this instance's config lacks.
export function overrideLine(name, rs) {
  if (rs.override_unservable && rs.override_unservable.length) {
    const missing = rs.override_unservable.join(", ");
    return ["bad", "NOT SERVING", `route ${name} is latched to ${missing}, which this instance's config does ` +
      `not have: it answers its fallback (else 503) until \`killgate release ${name}\` or a config with ${missing}`];
  }
  if (rs.override_missing && rs.override_missing.length) {
    const missing = rs.override_missing.join(", ");
    return ["warn", "PARTLY SERVING", `route ${name}'s latched override gives traffic to ${missing}, which this ` +
      `instance's config does not have: its other versions take that share here until \`killgate release ${name}\` ` +
      `or a config with ${missing}`];
  }
  return null;
}

function killLines(sd) {
  const gone = (sd.kills || []).filter((k) => k.routed === false);
  if (!gone.length) return [];
  return [["warn", "NOT ROUTED", `the config has no ${gone.map((k) => (k.version ? `version ${k.route}/${k.version}`
    : `route ${k.route}`)).join(", ")}: these kills stop nothing until the name comes back`]];
}

function fleetLines(sd, fleet) {
  const out = [];
  const mine = sd ? sd.generation : fleet.generation;
  const store = (sd && sd.store) || {};
  const refused = store.connected === true && Boolean(store.writes_refused);
  for (const r of fleet.instances || []) {
    if (r.self) continue;
    if (!r.live && refused) {
      // (every heartbeat refused with every write, -NOREPLICAS: it may read the store still)
      out.push(["warn", "SILENT", `instance ${r.instance}: not counted in receipts; not heard since the store ` +
        "refuses every write (WRITES REFUSED: its heartbeat too), so whether it still applies the store cannot " +
        "be told from here: ask its own /v1/status (store.connected, stale)"]);
    } else if (!r.live) {
      out.push(["bad", "SILENT", `instance ${r.instance}: not counted in receipts; crashed, or cut off from the ` +
        "store and NOT enforcing changes made since (check it, or stop it)"]);
    } else if (typeof r.generation === "number" && typeof mine === "number" && r.generation < mine) {
      out.push(["warn", "BEHIND", `instance ${r.instance} has not applied generation ${mine}`]);
    }
  }
  return out;
}

export function warnings(sd, fleet, chain) {
  const lines = [];
  if (chain) {
    lines.push(["bad", "AUDIT CHAIN BROKEN", `at event ${chain.eventId}: ${chain.problem} (checked in this ` +
      "browser; see the audit trail below, and `killgate audit verify`)"]);
  }
  if (!sd) {
    // the warnings below come from GET /v1/status: without it none can be shown, which is
    // not "none" (those shown a round ago would silently go)
    lines.push(["bad", "STATE NOT READ", "GET /v1/status did not answer (see the kill switch panel): whether " +
      "this instance is stale, not synced, fail-closed or failed a reload cannot be told here; " +
      "`killgate status` asks again"]);
  } else {
    lines.push(...storeLines(sd), ...configLines(sd));
    for (const [name, rs] of Object.entries(sd.routes || {})) {
      const line = overrideLine(name, rs);
      if (line) lines.push(line);
    }
    lines.push(...killLines(sd));
  }
  if (fleet) lines.push(...fleetLines(sd, fleet));
  return lines;
}

export function renderWarnings(el, sd, fleet, chain) {
  const lines = warnings(sd, fleet, chain);
  el.hidden = !lines.length;
  render(el, lines.length ? h("ul", {class: "warnings"}, lines.map(([kind, word, text]) =>
    h("li", {}, badge(kind, word), " ", text))) : null);
}
