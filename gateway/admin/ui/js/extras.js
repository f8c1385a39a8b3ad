// Panels for features a gateway may not have: open approvals (GET /v1/approvals) and
// drill history (GET /v1/drills). Each shows only when its endpoint exists.

import {approvalSpec} from "./actions.js";
import {badge, fmtAgo, fmtMs, h, render} from "./dom.js";

const list = (data, key) => (Array.isArray(data) ? data : Array.isArray(data?.[key]) ? data[key] : []);

// the scope an approval needs is the scope of its action (CONTRACT §5.2)
const allowed = (a, can) => (String(a.action).includes("kill") ? can.kill : can.rollout);

export function renderApprovals(el, data, can, open) {
  const items = list(data, "approvals");
  render(el, items.length ? h("ul", {class: "approvals"}, items.map((a) => h("li", {},
    badge("warn", "waiting"), " ", h("strong", {}, a.action), " ",
    a.target ? JSON.stringify(a.target) : "",
    ` — ${(a.approved_by || []).length} of ${a.needs} (${(a.approved_by || []).join(", ")})`,
    a.reason ? `: “${a.reason}”` : "", a.expires ? ` · expires ${a.expires}` : "",
    allowed(a, can) ? [" ",
      h("button", {type: "button", class: "secondary", dataset: {key: `approve-${a.id}`},
                   onclick: () => open(approvalSpec(a, "approve"))}, "Approve…"), " ",
      h("button", {type: "button", class: "secondary", dataset: {key: `decline-${a.id}`},
                   onclick: () => open(approvalSpec(a, "decline"))}, "Decline…")] : null)))
    : h("p", {}, "No request is waiting for approval."));
}

function timing(d) {
  const t = d.time_to_kill_ms || d.time_to_failover_ms || d.time_to_rollback_ms;
  return t ? `p50 ${fmtMs(t.p50)}, p99 ${fmtMs(t.p99)}, max ${fmtMs(t.max)}` : "–";
}

export function renderDrills(el, data) {
  const items = list(data, "drills");
  const kind = {passed: "ok", failed: "bad", aborted: "warn"};
  render(el, items.length ? h("div", {class: "scroll"}, h("table", {},
    h("caption", {class: "sr-only"}, "Drill history, newest first"),
    h("thead", {}, h("tr", {}, ["When", "Kind", "Target", "Verdict", "Time to act", "Leaks", "Restored"]
      .map((c) => h("th", {scope: "col"}, c)))),
    h("tbody", {}, items.map((d) => h("tr", {},
      h("td", {title: d.started}, fmtAgo(d.started)), h("td", {}, d.kind),
      h("td", {}, [d.route, d.version].filter(Boolean).join("/")),
      h("td", {}, badge(kind[d.verdict] || "info", String(d.verdict))),
      h("td", {}, timing(d)), h("td", {}, String(d.leaks ?? "–")),
      h("td", {}, d.restored ? "yes" : "no"))))))
    : h("p", {}, "No drill has run yet."));
}
