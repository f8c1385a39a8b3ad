// Panels for features a gateway may not have: open approvals (GET /v1/approvals) and
// drill history (GET /v1/drills). Each shows only when its endpoint exists.

import {approvalSpec} from "./approval.js";
import {badge, fmtAgo, fmtMs, h, render, text} from "./dom.js";

const list = (data, key) => (Array.isArray(data) ? data : Array.isArray(data?.[key]) ? data[key] : []);

// the scope an approval needs is the scope of its action (CONTRACT §5.2)
const allowed = (a, can) => (String(a.action).includes("kill") ? can.kill : can.rollout);

// Approve… only where the API would take it: never on one's own request (403
// self_approval), on one approved already (409 already_approved), nor on one a newer
// version of killgate wrote (409 approval_from_newer_version: a rolling upgrade; it is
// approved through an instance of that version); the list says which (`yours`,
// `approved_by_you`, `from_newer_version`), so the page says why instead of offering a refusal.
function approveButton(a, open, kills) {
  const newer = a.from_newer_version;
  if (newer && typeof newer === "object") {
    return h("span", {class: "muted", dataset: {testid: "from-newer-version"}},
      `requested on ${newer.written_by || "a newer version of killgate"}: ` +
      `${newer.decide || "approve it through an instance of that version"}`);
  }
  if (a.yours === true) {
    return h("span", {class: "muted", dataset: {testid: "own-request"}},
      "your request: another principal must approve it (a requester cannot approve their own)");
  }
  if (a.approved_by_you === true) {
    return h("span", {class: "muted", dataset: {testid: "approved-by-you"}},
      "approved by you: waiting for another principal");
  }
  return h("button", {type: "button", class: "secondary", dataset: {key: `approve-${a.id}`},
                      onclick: () => open(approvalSpec(a, "approve", kills))}, "Approve…");
}

// Decline… likewise only where the API would take it: a newer version's request of an
// action this version does not know takes killgate:admin to decline here (403 otherwise;
// `from_newer_version.decline_scope` names the scope), so a token without it is told so.
function declineButton(a, can, open, kills) {
  const scope = a.from_newer_version?.decline_scope;
  if (typeof scope === "string" && scope.startsWith("killgate:") && can[scope.slice(9)] !== true) {
    return h("span", {class: "muted", dataset: {testid: "decline-needs-scope"}},
      `declining it here takes ${scope}, which this token does not have`);
  }
  return h("button", {type: "button", class: "secondary", dataset: {key: `decline-${a.id}`},
                      onclick: () => open(approvalSpec(a, "decline", kills))}, "Decline…");
}

export function renderApprovals(el, data, can, open, kills = []) {
  const items = list(data, "approvals");
  render(el, items.length ? h("ul", {class: "approvals"}, items.map((a) => h("li", {dataset: {approval: a.id}},
    badge("warn", "waiting"), " ",
    a.from_newer_version ? [badge("warn", "from a newer version",
                                  String(a.from_newer_version.unknown || "")), " "] : null,
    h("strong", {}, a.action), " ", describeTarget(a),
    ` — ${(a.approved_by || []).length} of ${a.needs} (${(a.approved_by || []).join(", ")})`,
    a.requested_by ? `, asked by ${a.requested_by}` : "",
    a.reason ? `: “${a.reason}”` : "", a.expires ? ` · expires ${fmtAgo(a.expires)}` : "",
    allowed(a, can) ? [" ", approveButton(a, open, kills), " ", declineButton(a, can, open, kills)]
      : null)))
    : h("p", {}, "No request is waiting for approval."));
}

export function describeTarget(a) {
  const t = a.target || {};
  const what = t.scope === "global" ? "global" : [t.scope, [t.route, t.version].filter(Boolean).join("/")]
    .filter(Boolean).join(" ");
  const args = a.args && Object.keys(a.args).length ? ` ${JSON.stringify(a.args)}` : "";
  return what + args;
}

// A drill's summary is whatever its killgate:drill principal sent (`POST .../end`): a value
// that is no number is shown as text, never left to throw (`{"toString": 0}` cannot be
// printed by JavaScript: the whole history was replaced by a TypeError)
const ms = (x) => (typeof x === "number" ? fmtMs(x) : x === null || x === undefined ? "–" : text(x));

function timing(s) {
  const t = s.time_to_kill_ms || s.time_to_failover_ms || s.time_to_rollback_ms;
  return t ? `p50 ${ms(t.p50)}, p99 ${ms(t.p99)}, max ${ms(t.max)}` : "–";
}

// A drill's result: a `drill.end` audit event (GET /v1/drills' history), or a report.
function drillRow(d) {
  const t = d.target || d;
  const after = d.after || d;
  const s = after.summary || d;
  return {when: d.time || d.finished || d.started, kind: t.kind, route: t.route, version: t.version,
          verdict: after.verdict, s, actor: d.actor};
}

export function renderDrills(el, data) {
  const open = Array.isArray(data?.open) ? data.open : [];
  const rows = (Array.isArray(data?.history) ? data.history : list(data, "drills")).map(drillRow);
  const kind = {passed: "ok", failed: "bad", aborted: "warn", skipped: "info"};
  render(el,
    open.length ? h("ul", {class: "kills"}, open.map((r) => h("li", {},
      r.overdue ? badge("bad", "OVERDUE") : badge("warn", "running"), " ",
      h("strong", {}, `${r.kind} drill on ${[r.route, r.version].filter(Boolean).join("/")}`),
      ` (${r.id || r.drill || ""}) since ${fmtAgo(r.started)}`))) : null,
    rows.length ? h("div", {class: "scroll"}, h("table", {},
      h("caption", {class: "sr-only"}, "Drill history, newest first"),
      h("thead", {}, h("tr", {}, ["When", "Kind", "Target", "Verdict", "Time to act", "Leaks", "Errors", "By"]
        .map((c) => h("th", {scope: "col"}, c)))),
      h("tbody", {}, rows.map((d) => h("tr", {},
        h("td", {title: d.when}, fmtAgo(d.when)), h("td", {}, d.kind || "–"),
        h("td", {}, [d.route, d.version].filter(Boolean).map(text).join("/")),
        h("td", {}, badge(kind[d.verdict] || "info", text(d.verdict ?? "?"))),
        h("td", {}, timing(d.s)), h("td", {}, text(d.s.leaks ?? "–")),
        h("td", {}, text(d.s.errors ?? "–")), h("td", {}, d.actor || "–"))))))
      : h("p", {}, "No drill has ended yet."));
}
