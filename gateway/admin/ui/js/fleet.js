// The fleet panel (instances, generations, config digests, the store) and the kill
// switch panel (every kill in force, and the global switch).

import {killSpec, unkillSpec} from "./actions.js";
import {badge, fmtAgo, h, render, short} from "./dom.js";

// fewer replicas in sync with the store's primary than state.min_replicas (store.replicas)
export function notDurable(st) {
  const r = st && st.replicas;
  return Boolean(r && typeof r.connected === "number" && typeof r.required === "number" && r.connected < r.required);
}

// an instance's build (12 hex), or "?" when it does not say one (a version before)
function buildOf(r) {
  return typeof r.build === "string" && /^[0-9a-f]{1,64}$/.test(r.build) ? r.build.slice(0, 12) : "?";
}

// the live instances run more than one build: an upgrade under way, or a host left behind
// (as `killgate status` says it under its INSTANCES table)
function buildsNote(instances) {
  const counts = new Map();
  for (const r of instances) if (r.live) counts.set(buildOf(r), (counts.get(buildOf(r)) || 0) + 1);
  if (counts.size < 2) return null;
  const said = [...counts].sort((a, b) => b[1] - a[1] || (a[0] === "?") - (b[0] === "?") || (a[0] < b[0] ? -1 : 1))
    .map(([b, n]) => `${b} on ${n}`).join(", ");
  return h("p", {"data-testid": "fleet-builds"}, badge("warn", `${counts.size} builds`),
    ` ${said}: an upgrade under way, or a host left behind`);
}

export function renderFleet(el, fleet) {
  const st = fleet.store || {};
  const storeBadges = [
    // (answering: the store answers with a document this instance cannot verify; most
    // often its key is not the fleet's, not a store that is down)
    st.connected ? badge("ok", "store connected")
      // (a document a newer version of killgate wrote: an upgrade to finish, no key problem)
      : st.newer_version ? badge("bad", "store holds a NEWER VERSION's state (finish the upgrade)")
      : st.answering ? badge("bad", "store UNVERIFIABLE (check state.signing_key_env)")
      // (its reads verify, its subscription is refused or cut: changes come at its polls)
      : st.pushes === "cut" ? badge("warn", `store PUSHES CUT: reading it every ${st.poll_interval_ms} ms`)
      : badge("bad", "store DISCONNECTED"),
    // (state.min_replicas: the primary holds fewer replicas in sync, as the heartbeat last
    // asked: every kill, rollback and drill is in force but answered 503 not_durable)
    notDurable(st) ? badge("bad", `store NOT DURABLE: the primary has ${st.replicas.connected} of ` +
      `${st.replicas.required} replicas (min_replicas)`, "kills are in force but answered 503 not_durable; bring a replica back")
      : st.connected && st.replicas_unknown ? badge("warn", "store replicas unknown", st.replicas_unknown) : null,
    // (redis's own min-replicas-to-write refuses every write, -NOREPLICAS: reads work)
    st.connected && st.writes_refused ? badge("bad", "store WRITES REFUSED (redis's min-replicas-to-write)",
      String(st.writes_refused)) : null,
    st.fail_closed ? badge("killed", "FAIL-CLOSED: every route answers killed") : badge("ok", "not fail-closed"),
    st.stale ? badge("warn", "state stale") : null,
    // values the store held that did not verify (forged, replayed, another key's): refused,
    // and the store re-seeded, but someone is writing to it (README "Trust")
    st.verification && st.verification.unverified_total
      ? badge("bad", `${st.verification.unverified_total} store value(s) refused (forged, replayed or another key's)`)
      : null,
    st.audit && st.audit.trail_lost ? badge("bad", "audit trail lost") : null,
  ];
  const rows = fleet.instances.map((r) => h("tr", {},
    h("th", {scope: "row"}, r.instance, r.self ? h("span", {class: "muted"}, " (this one)") : null),
    h("td", {}, r.live ? badge("ok", "live") : badge("bad", r.seen_s_ago === null ? "no heartbeat" : "silent")),
    // (the build it runs, published with its heartbeat; "?": a version before builds were)
    h("td", {"data-testid": "fleet-build"}, h("code", {}, buildOf(r))),
    h("td", {}, String(r.generation), r.behind ? h("span", {class: "warntext"}, ` (${r.behind} behind)`) : null),
    h("td", {title: r.config}, h("code", {}, short(r.config.replace(/^sha256:/, ""), 12)),
      r.config_matches ? null : [" ", badge("warn", "differs")]),
    h("td", {}, r.seen_s_ago === null || r.seen_s_ago === undefined ? "–" : `${r.seen_s_ago.toFixed(1)} s`)));
  render(el,
    h("p", {class: "summary"},
      // (heartbeats unreadable: the count is not 0, it is unknown, as `killgate status` says)
      h("strong", {"data-testid": "fleet-live"}, fleet.fleet_error
        ? "live instances unknown (this instance cannot read the store)" : `${fleet.live} live instance(s)`),
      ` · generation ${fleet.generation} · ${fleet.config_digests} config digest(s) · `, storeBadges),
    buildsNote(fleet.instances),
    h("div", {class: "scroll"}, h("table", {class: "fleet"},
      h("caption", {class: "sr-only"}, "Gateway instances"),
      h("thead", {}, h("tr", {}, ["Instance", "Heartbeat", "Build", "Generation", "Config", "Heard"].map(
        (c) => h("th", {scope: "col"}, c)))),
      h("tbody", {}, rows))),
    h("p", {class: "muted"},
      `The state store (${st.backend}) as ${fleet.instance} sees it: staleness ${st.staleness_ms} ms ` +
      `of ${st.max_staleness_ms} ms allowed, policy ${st.policy}` +
      (fleet.fleet_error ? `; heartbeats unreadable: ${fleet.fleet_error}` : "") +
      ". Another instance that loses the store stops its heartbeat: it shows as silent, then leaves."));
}

export function renderKills(el, status, can, open) {
  const kills = status.kills || [];
  const global = kills.find((k) => k.scope === "global");
  const items = kills.map((k) => {
    const what = k.scope === "global" ? "global" : k.scope === "route" ? `route ${k.route}`
      : `version ${k.route}/${k.version}`;
    return h("li", {class: "kill"}, badge("killed", "KILLED"), " ", h("strong", {}, what),
      ` by ${k.actor}, ${fmtAgo(k.time)}: “${k.reason}”`,
      k.routed === false ? [" ", badge("warn", "NOT ROUTED"),
        " the config has no such name: this kill stops nothing until the name comes back"] : null,
      // an emergency local kill: enforced here only; an unkill cannot lift it before the
      // merge (only by hand on its host), so none is offered
      k.local === true ? [" ", badge("bad", "LOCAL — not yet in the store"),
        " enforced on this instance only, NOT by the rest of the fleet until it is merged"] : null,
      can.kill && k.local !== true ? [" ", h("button", {type: "button", class: "secondary", dataset: {key: `unkill-${what}`},
                                    onclick: () => open(unkillSpec(k))}, `Unkill ${what}`)] : null);
  });
  // what the answering instance enforces: when its state is not the store's (stale, not
  // synced, not loaded), "no kill" is not news of the fleet's kills
  const store = status.store || {};
  const unknown = Object.values(status.routes || {}).some((r) => r && r.killed === "state_unknown");
  const behind = unknown || store.stale || (store.synced === false &&
    (store.from_snapshot || (store.backend && store.backend !== "local"))); // (as the warnings)
  const none = behind
    ? h("p", {}, badge("warn", "No kill known"), ` to ${status.instance}, whose state is not current ` +
        "(see the warnings above): kills made meanwhile may be in force elsewhere and not shown here")
    : h("p", {}, badge("ok", "No kill in force"));
  render(el,
    items.length ? h("ul", {class: "kills"}, items) : none,
    can.kill && !global ? h("button", {type: "button", class: "danger", dataset: {key: "kill-global"},
                                       onclick: () => open(killSpec("global"))},
                            "Kill everything (global)…") : null);
}
