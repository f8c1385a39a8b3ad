// One card per route: its versions (configured and effective weights, health, kills),
// the latch, the live charts of the fleet's traffic, canary analysis and progressive
// steps, and the actions the signed-in scopes allow.

import {killSpec, promoteSpec, releaseSpec, rollbackSpec, unkillSpec, weightsSpec} from "./actions.js";
import {lineChart} from "./charts.js";
import {badge, fmtAgo, fmtMs, fmtNum, fmtPct, h, render} from "./dom.js";
import {overrideLine} from "./warnings.js";

const last = (arr) => {
  for (let i = (arr || []).length - 1; i >= 0; i--) if (arr[i] !== null) return arr[i];
  return null;
};

function healthCell(v) {
  const hl = v.health;
  if (v.healthy) return badge("ok", "healthy");
  const cause = hl && hl.ejected_cause ? ` for ${hl.ejected_cause}` : "";
  const why = hl && hl.ejected_for_s > 0 ? `ejected${cause} ${hl.ejected_for_s} s` : hl && hl.last_probe_error
    ? `probe: ${hl.last_probe_error}` : "unhealthy";
  return badge("bad", why);
}

// routeKilled: what stops the whole route (its status's `killed`: "route", "global", or
// "state_unknown" while this instance has not loaded the fleet's kills), named as such
function stateCell(name, v, routeKilled, unservable, shadow) {
  if (routeKilled === "state_unknown") {
    return badge("bad", "NOT SERVING (state unknown)", `${name} gets no traffic on this instance until it syncs`);
  }
  if (v.killed) return badge("killed", routeKilled ? `KILLED (${routeKilled})` : "KILLED", `${name} gets no traffic`);
  // the route's latched override serves only versions this config lacks: none serves here
  if (unservable) return badge("bad", "NOT SERVING", `${name} gets no traffic on this instance`);
  // the shadow answers no client: a copy of the stable's requests, compared (its report:
  // `killgate shadow report`); shown as "serving" it read as a version ready to promote
  if (shadow && shadow.version === name && !(v.effective_weight > 0)) {
    return badge("info", shadow.mirroring ? "shadow: mirroring" : `shadow: off (${shadow.off})`,
                 `${name} answers no client: it gets copies of the stable's requests, and its answers are compared`);
  }
  return badge("ok", "serving");
}

function versionRows(name, rs, series, can, open, kills) {
  return Object.entries(rs.versions).map(([vn, v]) => {
    const sv = series?.[vn];
    const flag = kills.find((k) => k.scope === "version" && k.route === name && k.version === vn);
    const actions = [];
    if (can.kill) {
      actions.push(flag
        ? h("button", {type: "button", class: "secondary", dataset: {key: `unkill-${name}/${vn}`},
                       onclick: () => open(unkillSpec(flag))}, `Unkill ${vn}`)
        : h("button", {type: "button", class: "danger", dataset: {key: `kill-${name}/${vn}`},
                       onclick: () => open(killSpec("version", name, vn, rs))}, `Kill ${vn}`));
    }
    if (can.rollout && vn !== rs.stable) {
      actions.push(h("button", {type: "button", class: "secondary", dataset: {key: `promote-${name}/${vn}`},
                                onclick: () => open(promoteSpec(name, vn, rs))}, `Promote ${vn}`));
    }
    return h("tr", {class: v.killed ? "killed" : null, dataset: {version: vn}},
      h("th", {scope: "row"}, vn, vn === rs.stable ? h("span", {class: "muted"}, " stable")
        : rs.shadow?.version === vn ? h("span", {class: "muted"}, " shadow") : null),
      h("td", {class: "num"}, fmtNum(v.configured_weight, 2)),
      h("td", {class: "share"}, h("progress", {max: 100, value: v.effective_weight ?? 0,
                                               "aria-label": `${vn} share`}),
        ` ${fmtNum(v.effective_weight, 1)} %`),
      h("td", {}, healthCell(v)),
      h("td", {"data-testid": "state"}, stateCell(vn, v, rs.killed ? String(rs.killed) : null, Boolean(rs.override_unservable?.length), rs.shadow)),
      h("td", {class: "num"}, sv ? `${fmtNum(last(sv.rps), 1)}/s` : "–"),
      h("td", {class: "num"}, sv ? fmtPct(last(sv.error_rate)) : "–"),
      h("td", {class: "num"}, sv ? fmtMs(last(sv.p99_ms)) : "–"),
      can.kill || can.rollout ? h("td", {class: "actions"}, actions) : null);
  });
}

function charts(rs, traffic) {
  const series = traffic?.routes?.[rs.name] || {};
  const names = Object.keys(rs.versions);
  const lines = (field, scale = 1) => names.map((n, i) => ({
    name: n, style: i, values: (series[n]?.[field] || traffic?.t?.map(() => null) || [])
      .map((v) => (v === null ? null : v * scale))}));
  const t = traffic?.t || [];
  const who = traffic ? (traffic.scope === "fleet"
    ? `All ${traffic.instances.length} live instance(s), summed, ${traffic.step_s} s buckets`
    : `Only ${traffic.instance}: the state store could not be read (${traffic.store_error})`) : "loading";
  return h("div", {class: "charts"},
    h("p", {class: "muted chartnote"}, `Exchanges with each version over the last ${Math.round((traffic?.window_s || 300) / 60)} minutes. ${who}.`),
    lineChart({title: "Requests per second", lines: lines("rps"), t, fmt: (v) => `${fmtNum(v, 1)}/s`, floorMax: 1}),
    lineChart({title: "Error rate", lines: lines("error_rate", 100), t, fmt: (v) => `${fmtNum(v, 1)} %`, floorMax: 5}),
    lineChart({title: "p99 latency", lines: lines("p99_ms"), t, fmt: fmtMs, floorMax: 10}));
}

function analysis(rs) {
  const a = rs.analysis;
  if (!a) return null;
  const kind = {passed: "ok", failed: "bad", inconclusive: "warn", error: "warn"}[a.verdict] || "info";
  const ev = a.evidence || {};
  const row = (label, x) => x ? h("tr", {}, h("th", {scope: "row"}, label), h("td", {}, String(x.requests)),
    h("td", {}, String(x.errors)), h("td", {}, fmtPct(x.error_rate)), h("td", {}, fmtMs(x.p99_ms))) : null;
  const p = a.progress;
  const steps = p && p.steps ? h("ol", {class: "steps"}, p.steps.map((w, i) => h("li", {
    class: i === p.step ? "current" : i < p.step ? "done" : null,
    "aria-current": i === p.step ? "step" : null}, `${w} %`))) : null;
  return h("div", {class: "analysis"},
    h("h4", {}, "Canary analysis"),
    a.verdict ? h("p", {}, badge(kind, a.verdict.toUpperCase()), " ", (a.reasons || []).join("; ")) : null,
    ev.canary ? h("table", {class: "evidence"},
      h("caption", {}, `Evidence over ${ev.window_s} s (at least ${ev.min_requests} requests needed)`),
      h("thead", {}, h("tr", {}, ["", "requests", "errors", "error rate", "p99"].map((c) => h("th", {scope: "col"}, c)))),
      h("tbody", {}, row("canary", ev.canary), row("stable", ev.stable))) : null,
    p ? h("p", {}, `Progressive delivery of ${p.canary}: step ${Number(p.step) + 1} of ${p.steps ? p.steps.length : "?"}` +
      `${p.weight !== null && p.weight !== undefined ? ` (${p.weight} %)` : ""}, ${p.state}.`, steps) : null,
    a.recent && a.recent.length ? h("details", {},
      h("summary", {}, `Last ${a.recent.length} verdicts`),
      h("ul", {class: "recent"}, a.recent.map((r) => h("li", {},
        h("span", {title: r.time, "data-ago": r.time}, fmtAgo(r.time)), " ", h("strong", {}, r.verdict), `: ${(r.reasons || []).join("; ")}`)))) : null);
}

export function routeCard(name, rs, traffic, can, open, kills) {
  rs = {...rs, name};
  const badges = [];
  if (rs.killed) badges.push(badge("killed", `KILLED (${rs.killed})`));
  if (typeof rs.drill_for === "string") {
    badges.push(badge("info", `drill route of ${rs.drill_for}`,
      `the same versions as ${rs.drill_for}, for drills' requests only (its match names a header drills send): ` +
      `a kill here stops none of ${rs.drill_for}'s users' traffic`));
  }
  if (rs.latched) badges.push(badge("lock", `latched: ${rs.override?.kind} by ${rs.override?.actor}`, rs.override?.reason));
  const over = overrideLine(name, rs);
  if (over) badges.push(badge(over[0], over[1]));
  const routeFlag = kills.find((k) => k.scope === "route" && k.route === name);
  const acts = [];
  if (can.kill) {
    acts.push(routeFlag
      ? h("button", {type: "button", class: "secondary", dataset: {key: `unkill-route-${name}`},
                     onclick: () => open(unkillSpec(routeFlag))}, "Unkill route")
      : h("button", {type: "button", class: "danger", dataset: {key: `kill-route-${name}`},
                     onclick: () => open(killSpec("route", name, null, rs))}, "Kill route…"));
  }
  if (can.rollout) {
    acts.push(h("button", {type: "button", class: "secondary", dataset: {key: `rollback-${name}`},
                           onclick: () => open(rollbackSpec(name, rs))}, "Roll back…"));
    acts.push(h("button", {type: "button", class: "secondary", dataset: {key: `weights-${name}`},
                           onclick: () => open(weightsSpec(name, rs))}, "Set weights…"));
    if (rs.latched) {
      acts.push(h("button", {type: "button", class: "secondary", dataset: {key: `release-${name}`},
                             onclick: () => open(releaseSpec(name, rs))}, "Release to file…"));
    }
  }
  return h("article", {class: "route", "aria-labelledby": `route-${name}`, dataset: {route: name}},
    h("header", {}, h("h3", {id: `route-${name}`}, name), badges),
    rs.latched && rs.override ? h("p", {class: "muted"},
      `Override by ${rs.override.actor} `, h("span", {"data-ago": rs.override.time}, fmtAgo(rs.override.time)),
      `: “${rs.override.reason}”. Config reloads do not undo it; Release hands the route back to the file.`) : null,
    over ? h("p", {class: "warntext", "data-testid": "override-warning"}, `${over[1]}: ${over[2]}`) : null,
    h("div", {class: "scroll"}, h("table", {class: "versions"},
      h("caption", {class: "sr-only"}, `Versions of route ${name}`),
      h("thead", {}, h("tr", {}, ["Version", "Configured", "Share now", "Health", "State", "Rate", "Errors", "p99"]
        .map((c) => h("th", {scope: "col"}, c)), can.kill || can.rollout ? h("th", {scope: "col"}, "Actions") : null)),
      h("tbody", {}, versionRows(name, rs, traffic?.routes?.[name], can, open, kills)))),
    charts(rs, traffic),
    analysis(rs),
    acts.length ? h("div", {class: "row actions"}, acts) : null);
}

// ---------------------------------------------------------------- the routes panel

// The cards drawn, by route: {key: what the card was drawn from, el, ages: its "N min ago"}.
// A refresh redraws only the cards whose data changed: with 1000 routes, rebuilding every
// card took about a second of script every 3 s (found by review); an unchanged card is
// kept as it is (its layout, its focus), only its ages said again.
const cards = new Map();

// What a card is drawn from, as text: its status, its series, what its charts take from
// the traffic answer's frame (the number of buckets and the span they cover, not their
// times: an idle route's charts are the same from one bucket to the next), the actions the
// scopes allow, and the kills naming the route.
function cardKey(name, rs, traffic, can, kills) {
  const t = traffic?.t || [];
  return JSON.stringify([rs, traffic?.routes?.[name] ?? null,
    traffic ? [t.length, t.length ? t[t.length - 1] - t[0] : 0, traffic.scope, traffic.instances?.length ?? null,
               traffic.step_s, traffic.instance ?? null, traffic.store_error ?? null, traffic.window_s] : null,
    Boolean(can.kill), Boolean(can.rollout), kills.filter((k) => k.route === name)]);
}

// What the panel was last drawn from: api.js hands back the same objects for an answer that
// is the same text as the last one, and then no card is even compared.
let drawn = null;

// The routes panel: one card per route, then `tail` (a failed traffic read) if any.
export function drawRoutes(el, routes, traffic, can, open, kills, tail) {
  const from = {routes, traffic, kill: Boolean(can.kill), rollout: Boolean(can.rollout), kills};
  if (drawn && !tail && el.lastElementChild === drawn.last &&
      Object.keys(from).every((k) => from[k] === drawn.from[k])) {
    for (const c of cards.values()) for (const a of c.ages) a.textContent = fmtAgo(a.dataset.ago);
    return;
  }
  drawn = null;
  const want = [];
  for (const [name, rs] of Object.entries(routes)) {
    const key = cardKey(name, rs, traffic, can, kills);
    let c = cards.get(name);
    if (!c || c.key !== key || c.el.parentNode !== el) {
      const card = routeCard(name, rs, traffic, can, open, kills);
      c = {key, el: card, ages: card.querySelectorAll("[data-ago]")};
      cards.set(name, c);
    } else {
      for (const a of c.ages) a.textContent = fmtAgo(a.dataset.ago);
    }
    want.push(c.el);
  }
  for (const name of cards.keys()) if (!Object.hasOwn(routes, name)) cards.delete(name);
  if (tail) want.push(tail);
  const kids = el.children;
  const same = kids.length === want.length &&
    want.every((w, i) => kids[i] === w || (kids[i].dataset.route ?? null) === (w.dataset.route ?? null));
  if (!same) {
    render(el, want); // (routes added, removed or reordered: drawn anew)
  } else {
    swap(el, want);
  }
  drawn = {from, last: el.lastElementChild};
}

// The cards that changed, swapped in place; focus inside one goes to its new button.
function swap(el, want) {
  const kids = el.children;
  const active = document.activeElement;
  const focusKey = active && el.contains(active) ? active.dataset.key : undefined;
  want.forEach((w, i) => { if (kids[i] !== w) kids[i].replaceWith(w); });
  if (focusKey && !el.contains(document.activeElement)) {
    const again = el.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus({preventScroll: true});
  }
}
