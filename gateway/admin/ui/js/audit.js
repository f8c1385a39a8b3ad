// The audit trail panel: newest events first, and the hash chain re-checked in the
// browser from the API's own output (CONTRACT §4): every event's hash recomputed over its
// canonical JSON (without `hash` and `mac`), every prev_hash linked to the next older
// event, the recorded head found.
// The per-event HMAC (`mac`) needs the audit key, which a browser never holds.

import {call} from "./api.js";
import {badge, fmtAgo, h, render, short, text} from "./dom.js";
import {canonical, parse} from "./json.js";
import {sha256} from "./sha256.js";

const GENESIS = "0".repeat(64);

// events: newest first, as parsed with keepNumbers. → {ok, checked, problem, eventId,
// reachesStart, headFound}
export async function verifyChain(events, head) {
  let headFound = head === null || head === undefined || head === GENESIS;
  for (let i = 0; i < events.length; i++) {
    const ev = events[i];
    // the hash covers the event without `hash` and `mac` (the MAC is over the hash)
    const body = Object.fromEntries(Object.entries(ev).filter(([k]) => k !== "hash" && k !== "mac"));
    const digest = await sha256(canonical(body));
    if (digest !== ev.hash) {
      return {ok: false, checked: i + 1, eventId: text(ev.id),
              problem: "its hash does not match its content (edited)"};
    }
    const older = events[i + 1];
    if (older !== undefined && ev.prev_hash !== older.hash) {
      return {ok: false, checked: i + 1, eventId: text(ev.id),
              problem: "its prev_hash is not the older event's hash (deleted, inserted or reordered)"};
    }
    if (ev.hash === head) headFound = true;
  }
  const oldest = events[events.length - 1];
  // a trim (retention) removes the oldest events and appends a checkpoint naming the last
  // one it removed: the trail may start after the newest checkpoint's, and nothing else
  const checkpoint = newestCheckpoint(events);
  const trimmed = Boolean(oldest && checkpoint && oldest.prev_hash === checkpoint.after.last_removed.hash);
  const reachesStart = !oldest || oldest.prev_hash === GENESIS || trimmed;
  if (!headFound) {
    return {ok: false, checked: events.length, eventId: "(newest)",
            problem: "the recorded head is not among these events (events cut off the end?)"};
  }
  // the head is the newest event (the API answers with a head and a page that agree): an
  // event past it was not written by a gateway, which anchors each one in the signed state
  const past = head === null || head === undefined || head === GENESIS ? 0
    : events.findIndex((ev) => ev.hash === head);
  if (past > 0) {
    return {ok: false, checked: events.length, eventId: text(events[past - 1].id),
            problem: `it and the ${past - 1} event(s) after it are past the head the signed ` +
              "state anchors: added to the store by someone without the signing key"};
  }
  // no head at all (the store's document does not verify, or is gone): nothing anchors
  // the end of the trail, so events added or cut off there cannot be seen here
  const anchored = events.length === 0 || (head !== null && head !== undefined);
  return {ok: true, checked: events.length, reachesStart, anchored,
          trimmed: trimmed ? checkpoint : null};
}

// The newest `audit.trim` checkpoint among `events` (newest first) naming a well-formed hash
function newestCheckpoint(events) {
  return events.find((ev) => ev.action === "audit.trim" && ev.after
    && ev.after.last_removed && typeof ev.after.last_removed.hash === "string"
    && /^[0-9a-f]{64}$/.test(ev.after.last_removed.hash)) || null;
}

// Every event, paging back through the whole trail (the "verify all" button). A trim that
// lands between two pages moves the trail's start past the pages read, with a checkpoint
// newer than the first: read again before calling that a break, as long as the head moved
// meanwhile (a look trims batch after batch on a long trail: once was not enough), as
// `killgate audit verify` does.
const READS_AGAIN = 5;

export async function verifyAll() {
  let res = await verifyAllOnce();
  for (let i = 0; i < READS_AGAIN && !res.ok; i++) {
    const was = res.readHead;
    res = await verifyAllOnce();
    if (res.readHead === was) break;
  }
  return res;
}

async function verifyAllOnce() {
  const first = await call("GET", "/v1/audit?limit=1000");
  const {head, events: newest} = parse(first.text, true);
  let events = newest;
  let next = first.data.next;
  while (next) {
    const page = await call("GET", `/v1/audit?limit=1000&before=${encodeURIComponent(next)}`);
    events = events.concat(parse(page.text, true).events);
    next = page.data.next;
  }
  const res = await verifyChain(events, head);
  if (res.ok && !res.reachesStart) {
    const cp = newestCheckpoint(events);
    // a store that lost its trail starts again at the re-seed continuing the head its
    // instance had anchored: an oldest event that is no such re-seed says events were
    // deleted from the start, the re-seed's record among them (`killgate audit verify`)
    const oldest = events[events.length - 1];
    const reseed = oldest.action === "state.reseed" && oldest.anchored_head === oldest.prev_hash;
    const after = `the trail starts after events the store no longer holds (${res.checked} ` +
      "event(s) from its oldest on verify here): ";
    return {ok: false, checked: res.checked, eventId: "(oldest)", readHead: head,
            problem: cp ? `the oldest event does not continue the newest trim checkpoint ` +
              `(${text(cp.id)}, ${text(cp.time)}): events were deleted past it without a signed checkpoint`
              // (a store that lost its trail: a redis restarted empty, re-seeded from an
              // instance's last-known state; every event after the loss was checked above)
              : reseed ? after + "the events before it were lost (a flushed or truncated " +
                "store, `audit_trail_lost`); the audit mirror or a backup holds them"
              : after + "its oldest event is no re-seed continuing a head the fleet had " +
                "anchored, as the first event after a flush is: events were deleted from the " +
                "trail's start (a re-seed's record, a trim checkpoint); the audit mirror or a " +
                "backup holds them"};
  }
  return {...res, readHead: head};
}

function target(t) {
  if (!t || typeof t !== "object") return text(t ?? "");
  if (t.scope === "global") return "global";
  if (t.scope) return [t.scope, [t.route, t.version].filter(Boolean).map(text).join("/")].map(text).join(" ");
  return Object.entries(t).map(([k, v]) => (k === "route" ? text(v) : `${k} ${short(v, 20)}`)).join(" ");
}

// How a gated write got past the two-person rule (admin/approvals.py), shown with its action
function marks(ev) {
  const out = [];
  if (ev.break_glass === true) out.push(" ", badge("warn", "BREAK GLASS", "applied without the approval the config asks for"));
  const ap = ev.approval;
  if (ap && typeof ap === "object" && Array.isArray(ap.approved_by)) {
    out.push(" ", h("span", {class: "muted"}, `approved by ${ap.approved_by.map(text).join(", ")}`));
  }
  const lk = ev.local;  // a local kill (admin/localkill.py): written when merged, taken earlier
  if (lk && typeof lk === "object") {
    out.push(" ", badge("warn", "LOCAL", "taken while the store was down, merged into it at this time"),
      " ", h("span", {class: "muted"}, `taken ${text(lk.taken)} on ${text(lk.instance)}`));
  }
  return out;
}

function verdictLine(res, pageSize) {
  if (!res) return h("p", {class: "chain"}, "Chain: checking…");
  if (res.verifying) return h("p", {class: "chain"}, "Verifying the whole trail…");
  if (!res.ok) {
    return h("p", {class: "chain broken"}, badge("bad", "Chain BROKEN"),
             ` at event ${res.eventId}: ${res.problem}.`);
  }
  const scope = res.whole ? `the whole trail (${res.checked} events` + (res.trimmed
    ? `, starting at a trim checkpoint: ${Number(text(res.trimmed.after.removed))} older event(s) up to ` +
      `${text(res.trimmed.after.to)} removed by retention on ${text(res.trimmed.time)})` : ")")
    : `the newest ${res.checked} of ${pageSize} events shown`;
  if (res.anchored === false) {
    return h("p", {class: "chain broken"}, badge("warn", "Chain NOT anchored"),
             ` in this browser for ${scope}: hashes recomputed and links checked, but the API ` +
             "named no recorded head (the state store holds no document that verifies), so " +
             "events added or cut off at the end cannot be seen here. ",
             h("span", {class: "muted"}, "`killgate audit verify` with the audit key checks the MACs."));
  }
  return h("p", {class: "chain"}, badge("ok", "Chain verified"),
           ` in this browser for ${scope}: hashes recomputed, links and the recorded head checked. `,
           h("span", {class: "muted"}, "The per-event HMAC needs the audit key: `killgate audit verify` checks it."));
}

export function renderAudit(el, page, preserved, res, onVerifyAll) {
  const rows = (page.events || []).map((ev, i) => h("tr", {},
    h("td", {title: ev.time}, fmtAgo(ev.time)),
    h("td", {}, ev.actor),
    h("td", {}, h("code", {}, ev.action), marks(ev)),
    h("td", {}, target(ev.target)),
    h("td", {class: "reason"}, ev.reason),
    h("td", {class: "hash", title: ev.hash}, h("code", {}, short(ev.hash, 10))),
  ));
  render(el,
    verdictLine(res, (preserved.events || []).length),
    h("div", {class: "row"},
      h("button", {type: "button", class: "secondary", dataset: {key: "audit-verify-all"},
                   disabled: Boolean(res && res.verifying), onclick: onVerifyAll},
        "Verify the whole trail")),
    h("div", {class: "scroll"},
      h("table", {class: "audit"},
        h("caption", {class: "sr-only"}, "Audit events, newest first"),
        h("thead", {}, h("tr", {}, ["When", "Actor", "Action", "Target", "Reason", "Hash"].map(
          (c) => h("th", {scope: "col"}, c)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", {colspan: 6}, "No events yet."))))));
}
