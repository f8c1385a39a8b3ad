// An approval request as the console shows it (GET /v1/approvals' items, or the 202 of a
// gated write): the dialog that approves or declines it says which request it is (action,
// the kill flag's key or the route, who asked and why) and, for an unkill, which kill in
// force it lifts, before anything is confirmed. Also how kill selectors are named.

export function selectorText(scope, route, version) {
  return scope === "global" ? "global" : scope === "route" ? `route ${route}` : `version ${route}/${version}`;
}

// the kill flag a request's target names, as the state keys it (domain/stateparts.kill_key)
const killKey = (t) => (t.scope === "global" ? "global" : t.scope === "route" ? `route:${t.route}`
  : `version:${t.route}:${t.version}`);

// `kills`: the kill flags in force (GET /v1/status), to name the one an unkill lifts
export function approvalSpec(a, decision, kills = []) {
  const t = a.target || {};
  const what = [a.action, t.scope === "global" ? "global" : [t.route, t.version].filter(Boolean).join("/")]
    .filter(Boolean).join(" ");
  // approving an unkill lifts a kill (now, or with the approvals still to come): it needs
  // the explicit confirmation every unkill needs, as the unkill dialog asks for it
  const lifts = decision === "approve" && a.action === "unkill";
  const lifted = selectorText(t.scope, t.route, t.version);
  const now = (a.approved_by || []).length + 1 >= a.needs;
  return {
    key: `${decision}-${a.id}`, title: `${decision === "approve" ? "Approve" : "Decline"}: ${what}`,
    confirm: lifts ? (now ? `Yes: lift the kill on ${lifted} now and let traffic flow again`
      : `Yes: approve lifting the kill on ${lifted}`) : null,
    method: "POST", path: `/v1/approvals/${encodeURIComponent(a.id)}/${decision}`,
    // approving names the change reviewed here: a stored change that differs is refused
    body: decision === "approve" && a.hash ? {hash: a.hash} : {},
    changes: () => [requestLine(a, lifted, t), ...liftsLine(a, t, kills), ["Approvals",
      `approved by ${(a.approved_by || []).join(", ") || "nobody"} (${(a.approved_by || []).length} of ${a.needs})`,
      decision === "approve"
        ? ((a.approved_by || []).length + 1 >= a.needs ? "approved by you too: applied now" : "approved by you too; more needed")
        : "declined: dropped, nothing applied"],
      ["The change", "", `${JSON.stringify(a.target || {})}${a.args ? " " + JSON.stringify(a.args) : ""}`]],
  };
}

// which request this is, before anything is confirmed: its action, what it acts on (for a
// kill or unkill, the flag's key), who asked and why
function requestLine(a, lifted, t) {
  const on = String(a.action).includes("kill") ? `${lifted} (key ${killKey(t)})`
    : `route ${t.route || "?"}${a.args && Object.keys(a.args).length ? ` ${JSON.stringify(a.args)}` : ""}`;
  return [`Request ${a.id}`, "", `${a.action} ${on}, asked by ${a.requested_by || "?"}` +
    (a.reason ? `: “${a.reason}”` : "") + (a.expires ? `; expires ${a.expires}` : "")];
}

// an unkill: the kill in force it lifts, as the kills panel shows it (the request names
// the kill in force when it was asked, `args.kill`: another one since is not lifted by it)
function liftsLine(a, t, kills) {
  if (a.action !== "unkill") return [];
  const k = kills.find((f) => f.scope === t.scope && (f.route ?? null) === (t.route ?? null) &&
    (f.version ?? null) === (t.version ?? null));
  if (!k) return [];
  const set = `set by ${k.actor}${k.time ? ` at ${k.time}` : ""}: “${k.reason}”`;
  const named = a.args && a.args.kill;
  if (named && k.id && named !== k.id) {
    return [["The kill it lifts", "", `none: the kill it named was lifted since; ${killKey(t)} ` +
      `is killed again (${set}), and approving is refused (409 kill_replaced)`]];
  }
  return [["The kill it lifts", "", `${killKey(t)}, ${set}`]];
}
