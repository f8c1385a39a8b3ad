// Every write the console can make, and the one dialog that makes it: it asks for a
// reason, lists exactly what will change (and shows the request itself), asks for an
// explicit confirmation before a global or an unkill action, then shows the propagation
// receipt, or the API's error exactly as the API wrote it.

import {ApiError, call, newKey} from "./api.js";
import {approvalSpec, selectorText} from "./approval.js";
import {h, render} from "./dom.js";
import {localKillSpec, localReceipt} from "./localkill.js";

const WAIT = "2s";

const pct = (x) => `${Number(x ?? 0).toFixed(1).replace(/\.0$/, "")} %`;

function weightsText(versions, pick) {
  return Object.entries(versions).map(([n, v]) => `${n} ${pct(pick(v))}`).join(", ");
}

export function killSpec(scope, route, version, rs) {
  const what = selectorText(scope, route, version);
  const effect = {
    global: "every route on every instance stops serving (fallbacks, or 503)",
    route: `route ${route} answers with its fallback (or 503) on every instance`,
    version: `every instance stops sending requests to ${version}; they go to the other versions`,
  }[scope];
  const spec = {
    key: `kill-${what}`, title: `Kill ${what}`, method: "POST", path: "/v1/kill",
    body: {scope, ...(route ? {route} : {}), ...(version ? {version} : {})}, danger: true,
    confirm: scope === "global" ? "Yes: stop ALL traffic, on every route and every instance" : null,
    changes: (body) => {
      const out = [[`Kill flag ${what}`, "not set", `set: ${effect}`]];
      if (scope === "version" && rs) {
        out.push([`${version}'s share of new traffic`, pct(rs.versions[version]?.effective_weight), "0 %"]);
      }
      out.push(["Responses in flight", "", body.abort_inflight === false
        ? "left to finish" : "cut now (abort_inflight)"]);
      return out;
    },
    fields: (onChange) => {
      const box = h("input", {type: "checkbox", id: "f-abort", checked: true, onchange: onChange});
      return {els: [h("div", {class: "check"}, box, h("label", {for: "f-abort"},
                      "Also cut responses already streaming (abort in-flight)"))],
              read: () => (box.checked ? {} : {abort_inflight: false})};
    },
  };
  return spec;
}

export function unkillSpec(flag) {
  const what = selectorText(flag.scope, flag.route, flag.version);
  return {
    key: `unkill-${what}`, gated: true, title: `Lift the kill on ${what}`, method: "POST", path: "/v1/unkill",
    // `kill`: this kill, as shown: lifted and made again meanwhile, it is refused
    // (409 kill_replaced) instead of lifting a kill nobody here has seen
    body: {scope: flag.scope, ...(flag.route ? {route: flag.route} : {}),
           ...(flag.version ? {version: flag.version} : {}), ...(flag.id ? {kill: flag.id} : {})},
    confirm: `Yes: lift the kill on ${what} and let traffic flow again`,
    changes: () => [[`Kill flag ${what}`, `set by ${flag.actor}: “${flag.reason}”`,
                     "lifted: traffic flows again per the weights"]],
  };
}

const latchLine = (rs) => ["Latch", rs.latched ? `latched (${rs.override?.kind})` : "none",
  "latched: a config reload does not undo it; Release hands the route back to the file"];

export function rollbackSpec(name, rs) {
  const names = Object.keys(rs.versions);
  const dflt = rs.previous_known_good || names.find((n) => n !== rs.stable) || rs.stable;
  return {
    key: `rollback-${name}`, gated: true, title: `Roll back route ${name}`, method: "POST",
    path: `/v1/routes/${encodeURIComponent(name)}/rollback`, body: {},
    fields: (onChange) => {
      const sel = h("select", {id: "f-to", onchange: onChange},
        names.map((n) => h("option", {value: n, selected: n === dflt}, n)));
      return {els: [h("label", {for: "f-to"}, "Roll back to"), sel], read: () => ({to: sel.value})};
    },
    changes: (body) => [["Stable version", rs.stable, body.to],
      ["Traffic", weightsText(rs.versions, (v) => v.effective_weight), `${body.to} 100 %, others 0 %`],
      latchLine(rs)],
  };
}

export function promoteSpec(name, version, rs) {
  return {
    key: `promote-${name}-${version}`, gated: true, title: `Promote ${version} on route ${name}`, method: "POST",
    path: `/v1/routes/${encodeURIComponent(name)}/promote`, body: {version},
    changes: () => [["Stable version", rs.stable, version],
      ["Traffic", weightsText(rs.versions, (v) => v.effective_weight), `${version} 100 %, others 0 %`],
      latchLine(rs), ...shadowLine(name, version, rs)],
  };
}

// promoting the route's shadow makes a model no client was ever served by answer them all:
// said in the dialog, with where its agreement is read (the gate, when configured, is the API's)
const shadowLine = (name, version, rs) => (rs.shadow?.version === version
  ? [["Shadow", `${version} is this route's shadow: it answered no client so far`,
      `it serves every request and gets no more copies: read how often it agreed first (killgate shadow report ${name})`]]
  : []);

export function weightsSpec(name, rs) {
  return {
    key: `weights-${name}`, gated: true, title: `Set the weights of route ${name}`, method: "PUT",
    path: `/v1/routes/${encodeURIComponent(name)}/weights`, body: {},
    fields: (onChange) => {
      // the weights the route is set to: a latched override's, else the share now, but
      // never a killed or ejected version's 0 (applied as shown, it would stay at 0 after
      // its kill is lifted): the file's weight for it
      const set = (n, v) => (rs.latched && rs.override?.weights && n in rs.override.weights
        ? rs.override.weights[n] : v.killed || !v.healthy ? v.configured_weight
          : v.effective_weight ?? v.configured_weight);
      const inputs = Object.entries(rs.versions).map(([n, v]) => [n, h("input", {
        type: "number", min: 0, step: "any", id: `f-w-${n}`, value: set(n, v),
        oninput: onChange, "aria-describedby": "f-w-help"})]);
      return {
        els: [h("fieldset", {}, h("legend", {}, "New weights (relative; 0 = no traffic)"),
                inputs.map(([n, inp]) => h("div", {class: "weight"}, h("label", {for: inp.id}, n), inp)),
                h("p", {id: "f-w-help", class: "muted"}, "Killed or unhealthy versions still get nothing."))],
        read: () => ({weights: Object.fromEntries(inputs.map(([n, inp]) => [n, Number(inp.value)]))}),
      };
    },
    changes: (body) => {
      const total = Object.values(body.weights || {}).reduce((a, b) => a + (b > 0 ? b : 0), 0);
      return [...Object.entries(body.weights || {}).map(([n, w]) => [`${n} weight`,
        `configured ${rs.versions[n].configured_weight}, now ${pct(rs.versions[n].effective_weight)}`,
        `${w} (${total ? pct((100 * w) / total) : "–"} before kills and health)`]), latchLine(rs)];
    },
  };
}

export function releaseSpec(name, rs) {
  const file = Object.entries(rs.versions).map(([n, v]) => `${n} ${v.configured_weight}`).join(", ");
  return {
    key: `release-${name}`, gated: true, title: `Release route ${name} to its config file`, method: "POST",
    path: `/v1/routes/${encodeURIComponent(name)}/release`, body: {},
    changes: () => [["Runtime override", rs.override
      ? `${rs.override.kind} by ${rs.override.actor}: stable ${rs.override.stable}` : "none",
      `none: the file's weights (${file}) and stable govern again`]],
  };
}

// ---------------------------------------------------------------- the dialog

export function receiptText(status, data) {
  if (data && data.local === true) return localReceipt(data);
  if (status === 202 && data && data.approval) {
    const a = data.approval;
    const sofar = `${(a.approved_by || []).length} of ${a.needs} principal(s) so far ` +
      `(request ${a.id}, expires ${a.expires})`;
    // another principal's open request for this change: the asker is the one it waits for
    if (data.you_may_approve === true) {
      return `Already requested by ${a.requested_by || "another principal"}: ${sofar}. ` +
        `Nothing is changed yet; you may approve it: Approve… below, or ` +
        `\`killgate approve ${a.id}\`.`;
    }
    return `Needs approval: ${sofar}. Another operator approves it here or with ` +
      `\`killgate approve ${a.id}\`.`;
  }
  const ap = data && data.applied;
  if (!ap) return "Done.";
  let text = `generation ${data.generation}: applied by ${ap.acked}/${ap.instances} instance(s) in ${ap.elapsed_ms} ms`;
  if (ap.pending && ap.pending.length) text += `; not yet applied by ${ap.pending.join(", ")}`;
  if (data.changed === false) text += " (nothing changed: it was already so)";
  const a = data.approval;
  // POST /v1/approvals/{id}/decline: the request is dropped, nothing else changes
  if (a && a.state === "declined") return `Declined: request ${a.id} dropped, nothing applied (${text})`;
  // the approval that reached `needs`: the change applied, with its approvers
  if (a && a.state === "applied") text += `; approved by ${(a.approved_by || []).join(", ")}`;
  if (data.break_glass === true) text += "; break glass: applied without approval (audited)";
  // an unkill that lifted a narrower kill while a wider one still stops that traffic
  if (typeof data.still_killed_by === "string") {
    text += `; STILL KILLED by the ${data.still_killed_by} kill in force: that traffic stays ` +
      "stopped until it is lifted";
  }
  return text;
}

let opened = 0; // openings of the dialog
let current = null; // the open dialog's {busy()}, for closeAction

// Close the action dialog unless its request is in flight (that one shows its receipt):
// the principal it was opened for is gone (signed out, or the proxy's session is now
// another's), and its reason and confirmation were theirs, never the next one's.
// true when a dialog was open and is now closed.
export function closeAction() {
  const dlg = document.getElementById("action-dialog");
  if (!dlg.open || (current && current.busy())) return false;
  dlg.close();
  return true;
}

export function openAction(spec, opts) {
  const dlg = document.getElementById("action-dialog");
  const form = document.getElementById("action-form");
  const reason = document.getElementById("action-reason");
  const confirmBox = document.getElementById("action-confirm-box");
  const confirm = document.getElementById("action-confirm");
  const apply = document.getElementById("action-apply");
  const cancel = document.getElementById("action-cancel");
  const result = document.getElementById("action-result");
  document.getElementById("action-title").textContent = spec.title;
  dlg.classList.toggle("danger", Boolean(spec.danger));
  reason.value = "";
  confirm.checked = false;
  confirmBox.hidden = !spec.confirm;
  document.getElementById("action-confirm-label").textContent = spec.confirm || "";
  result.replaceChildren();
  apply.hidden = false;
  cancel.textContent = "Cancel";
  const extra = [];
  if (opts.breakGlass && spec.gated) {
    const bg = h("input", {type: "checkbox", id: "f-bg", onchange: () => update()});
    extra.push({els: [h("div", {class: "check"}, bg, h("label", {for: "f-bg"},
      "Break glass: skip the approval (audited, alerts sent)"))],
                read: () => (bg.checked ? {break_glass: true} : {}),
                changes: () => (bg.checked ? [["Approval", "needed where the config asks for it",
                  "skipped: applied at once as break glass (killgate:breakglass); " +
                  "the audit event and the outgoing event say so"]] : [])});
  }
  const fields = [spec.fields ? spec.fields(() => update()) : null, ...extra].filter(Boolean);
  render(document.getElementById("action-fields"), fields.map((f) => f.els));
  const body = () => Object.assign({}, spec.body, ...fields.map((f) => f.read()),
                                   {reason: reason.value.trim()});
  let stale = false; // the principal changed under this dialog: it never applies
  // (`query`: the emergency local kill's `local=1`, before the wait every write carries)
  const url = () => `${spec.path}?${spec.query ? `${spec.query}&` : ""}wait=${WAIT}`;
  const update = () => {
    const b = body();
    const lines = [...spec.changes(b), ...fields.flatMap((f) => (f.changes ? f.changes() : []))];
    render(document.getElementById("action-changes"), lines.map(([what, before, after]) =>
      h("li", {}, h("strong", {}, what), before ? [": ", h("span", {class: "before"}, before), " → "] : ": ",
        h("span", {class: "after"}, after))));
    document.getElementById("action-request").textContent =
      `${spec.method} ${url()}\n${JSON.stringify(b, null, 2)}`;
    apply.disabled = stale || !b.reason || (spec.confirm && !confirm.checked);
  };
  reason.oninput = update;
  confirm.onchange = update;
  // A write in flight keeps its dialog (no Cancel, no Escape) until its receipt or its
  // error shows (the call has a deadline): closed, the change would be made unseen, and
  // its receipt land in the next dialog opened. `run`: this opening's, checked all the same.
  const run = ++opened;
  let busy = false;
  current = {busy: () => busy};
  // the principal this dialog was opened for: asked again just before the write leaves
  // (behind a proxy, whoever its session is now signs the request in)
  const opener = opts.who ? opts.who() : null;
  // One Idempotency-Key per submission, the same for this dialog's same request sent
  // again (after a timeout's "may or may not have been applied", say): the API answers
  // it with the first try's result instead of applying it twice, as the CLI's retry is.
  // A request changed in between is another one, with a key of its own.
  let sent = null; // {key, text} of the last submission
  const keyFor = (b) => {
    const text = JSON.stringify(b);
    if (sent === null || sent.text !== text) sent = {key: newKey(), text};
    return sent.key;
  };
  cancel.disabled = false;
  cancel.onclick = () => { if (!busy) dlg.close(); };
  // (Chromium lets a refused cancel pass at the next Escape without a click in between,
  // closing the dialog outright: the key itself is refused, and a closed one reopened)
  dlg.oncancel = (ev) => { if (busy) ev.preventDefault(); };
  dlg.onkeydown = (ev) => { if (busy && ev.key === "Escape") ev.preventDefault(); };
  dlg.onclose = () => { if (busy && run === opened && !dlg.open) dlg.showModal(); };
  form.onsubmit = async (ev) => {
    ev.preventDefault(); // never a form submission (and the CSP forbids one)
    update();
    if (apply.disabled || busy) return;
    apply.disabled = true;
    busy = true;
    cancel.disabled = true;
    result.replaceChildren(h("p", {}, "Applying…"));
    const shown = () => run === opened && dlg.open;
    try {
      const now = opts.whoNow ? await opts.whoNow() : opener;
      if (now !== opener) {
        stale = true;
        busy = false;
        if (!shown()) return;
        cancel.disabled = false;
        result.replaceChildren(h("p", {class: "receipt error", "data-testid": "api-error"},
          `Nothing was sent: you are now signed in as ${now ?? "nobody"}, not ${opener} who opened ` +
          "this dialog (the proxy's session changed). Close it, and open the action again to act as yourself."));
        return; // (Apply stays disabled: this dialog's reason and confirmation are not theirs)
      }
      const b = body();
      const r = await call(spec.method, url(), b, keyFor(b), opener ?? undefined);
      // a receipt counts live instances only: one not heard from within the lease
      // (crashed, or cut off from the store) is named, as `killgate kill` warns of it
      const ap = r.data && r.data.applied;
      let silent = [];
      let unchecked = null; // why the instances not counted could not be asked for
      try {
        silent = ap && opts.silent ? await opts.silent(new Set(ap.pending || [])) : [];
      } catch (exc) {
        unchecked = exc instanceof ApiError ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : String(exc);
      }
      // (a 202 waits for approval: nothing applied yet, not drawn as a success)
      const short = r.status === 202 || (r.data && r.data.local === true) || (ap && ((ap.pending && ap.pending.length) || silent.length)) ||
        unchecked !== null || typeof (r.data && r.data.still_killed_by) === "string";
      busy = false;
      if (!shown()) return opts.done();
      cancel.disabled = false;
      const mayApprove = r.status === 202 && r.data && r.data.you_may_approve === true && r.data.approval;
      result.replaceChildren(h("p", {class: `receipt ${short ? "warn" : "ok"}`, "data-testid": "receipt"},
        receiptText(r.status, r.data), silent.length ? `; NOT COUNTED: ${silent.join(", ")}, not heard from ` +
          "within the lease (crashed, or cut off from the store and not enforcing this): see the Fleet panel" : "",
        unchecked !== null ? `; instances not heard from (which a receipt does not count) could not be asked ` +
          `for (GET /v1/fleet: ${unchecked}): see the Fleet panel` : ""),
        // the approval dialog for that request, as the approvals panel's button opens it
        mayApprove ? h("button", {type: "button", "data-key": `approve-asked-${r.data.approval.id}`,
                                  onclick: () => { dlg.close(); openAction(approvalSpec(r.data.approval, "approve", opts.kills ? opts.kills() : []), opts); }},
                       "Approve…") : null);
      apply.hidden = true;
      cancel.textContent = "Close";
      cancel.focus();
      opts.done();
    } catch (exc) {
      busy = false;
      if (!shown()) return;
      cancel.disabled = false;
      const msg = exc instanceof ApiError ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : String(exc);
      // a kill the store cannot commit: the emergency lever `killgate kill --local` pulls,
      // offered here too (before, the page's operator had to find a shell at that moment)
      // (or answers, but runs no command now: loading its dataset, a script past its limit;
      // or refuses every write: redis's min-replicas-to-write, store_refuses_writes)
      const lever = exc instanceof ApiError && ["state_store_unavailable", "state_store_loading",
        "state_store_busy", "store_refuses_writes"].includes(exc.type) &&
        spec.path === "/v1/kill" && !spec.query;
      result.replaceChildren(h("p", {class: "receipt error", "data-testid": "api-error"}, msg),
        lever ? h("button", {type: "button", class: "danger", "data-key": `local-${spec.key}`,
                             onclick: () => { dlg.close(); openAction(localKillSpec(spec), opts); }},
                  "Kill on this instance only…") : null);
      stale = stale || (exc instanceof ApiError && exc.type === "principal_changed"); // (never theirs)
      apply.disabled = stale;
    }
  };
  update();
  dlg.showModal();
  reason.focus();
}
