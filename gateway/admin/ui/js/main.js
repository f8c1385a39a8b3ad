// The console's entry point: sign-in, the refresh loop, and the panels it fills.
// Sign-in: a pasted token (kept in sessionStorage), or none at all when a proxy in front
// of the admin listener adds its own Authorization header: GET /v1/whoami tells which.

import {ApiError, call, clearToken, forgetAnswers, optional, setToken, token} from "./api.js";
import {closeAction, openAction} from "./actions.js";
import {renderAudit, verifyAll, verifyChain} from "./audit.js";
import {offset} from "./clock.js";
import {badge, h, render, text} from "./dom.js";
import {renderApprovals, renderDrills} from "./extras.js";
import {renderFleet, renderKills} from "./fleet.js";
import {parse} from "./json.js";
import {drawRoutes} from "./routes.js";
import {forgetStatus, readStatus} from "./statusread.js";
import {renderWarnings} from "./warnings.js";

const REFRESH_MS = 3000;
const AUDIT_ROWS = 25;
const $ = (id) => document.getElementById(id);
const st = {who: null, via: null, timer: null, features: {}, chain: {key: null, res: null}, whole: null,
            audit: null, verifying: false, round: false, again: false,
            kills: [], // the kill flags in force at the last round (an approval names the one it lifts)
            session: 0}; // session: bumped at every sign-in and sign-out

function showSignIn(message) {
  clearTimeout(st.timer);
  closeAction(); // (its reason and confirmation were the principal's who is gone)
  forgetAnswers();
  forgetStatus();
  st.who = null;
  st.kills = [];
  st.session++;
  $("main").hidden = true;
  $("signout").hidden = true;
  $("warnings").hidden = true;
  for (const id of ["warnings", "fleet-body", "kills-body", "routes-body", "audit-body", "approvals-body", "drills-body"]) {
    $(id).replaceChildren(); // nothing read with the old token stays on screen
  }
  render($("who"), h("span", {}, "Not signed in"));
  $("signin").hidden = false;
  render($("signin-error"), message ? h("p", {class: "receipt error"}, message) : null);
  $("token").focus();
}

async function whoami() {
  return (await call("GET", "/v1/whoami")).data;
}

function signedIn(who, via) {
  st.session++;
  st.who = who;
  st.via = via;
  $("signin").hidden = true;
  $("main").hidden = false;
  $("signout").hidden = via !== "token";
  render($("who"), h("span", {}, "Signed in as ", h("strong", {"data-testid": "subject"}, who.subject),
    " · scopes: ", h("span", {"data-testid": "scopes"}, who.scopes.join(" ") || "(none)"),
    via === "proxy" ? " · through your proxy" : ""));
  const session = st.session;
  features().then(() => refresh(session));
}

const open = (spec) => openAction(spec, {breakGlass: Boolean(st.features.breakGlass && st.who.can.breakglass),
                                          done: () => refresh(st.session), silent, kills: () => st.kills,
                                          who: () => st.who?.subject ?? null, whoNow});

// Who a write from a dialog is sent as, asked just before it leaves: signed in by a proxy,
// whoever its session is now (someone else may have signed in to it in this browser since
// the dialog opened; the refresh notices only at its next round), else the tab's token's.
async function whoNow() {
  if (st.via !== "proxy") return st.who?.subject ?? null;
  return (await whoami()).subject ?? null;
}

// The instances GET /v1/fleet holds a heartbeat of but has not heard from within the lease,
// other than those `known` (a receipt's pending): not counted in a receipt. Not asked without
// killgate:read (a refusal would be audited after every write); a read that fails throws
// (the receipt says it could not tell, rather than nothing).
async function silent(known) {
  if (!st.who || !st.who.can.read) return [];
  const rows = (await call("GET", "/v1/fleet")).data.instances;
  return (Array.isArray(rows) ? rows : []).filter((r) => r && r.live === false && !r.self &&
    !known.has(r.instance)).map((r) => String(r.instance));
}

function failure(exc) {
  return h("p", {class: "receipt error"}, exc instanceof ApiError
    ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : String(exc));
}

// A panel whose drawing throws (a value no check here foresaw: an audit event is whatever
// was written to the store) says so in its place: its last picture never stands as if
// current, and the panels (and warnings) after it are still drawn.
function draw(el, paint) {
  try {
    paint();
  } catch (exc) {
    el.hidden = false;
    render(el, h("p", {class: "receipt error"}, `This panel could not be drawn from the API's answer ` +
      `(${text(exc)}): what it showed before is gone, not current. \`killgate status\` and ` +
      "`killgate audit verify` read the same state."));
  }
}

async function auditPanel(res) {
  st.audit = res;
  const page = res.data;
  const preserved = parse(res.text, true);
  const key = res.text; // re-checked whenever anything in the page differs
  if (st.chain.key !== key) {
    let chain;
    try {
      chain = await verifyChain(preserved.events, preserved.head);
    } catch (exc) { // (events of a shape no gateway writes): not checked is not verified
      chain = {ok: false, checked: 0, eventId: "-", problem: `the page could not check it (${text(exc)})`};
    }
    st.chain = {key, res: chain};
    st.whole = st.whole && st.whole.key === key ? st.whole : null;
  }
  const shown = st.verifying ? {verifying: true} : st.whole ? st.whole.res : st.chain.res;
  draw($("audit-body"), () => renderAudit($("audit-body"), page, preserved, shown, verifyWhole));
}

// "Verify the whole trail": every page back to the first event, checked here. A result
// stands for the page shown when it was asked for, until the newest page changes (then it
// would describe an older trail). A page drawn while it ran may hold an event the
// verification's own reads came too early to see: it does not take the result.
async function verifyWhole() {
  if (st.verifying) return;
  st.verifying = true;
  const session = st.session;
  const key = st.chain.key;
  await auditPanel(st.audit);
  let res;
  try {
    res = {...(await verifyAll()), whole: true};
  } catch (exc) {
    res = {ok: false, checked: 0, eventId: "-", problem: exc instanceof ApiError
      ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : String(exc)};
  }
  st.verifying = false;
  if (session !== st.session) return;
  st.whole = {key, res};
  await auditPanel(st.audit);
}

// Optional features (approvals, drills) are found in the API's own OpenAPI document, so
// a gateway without them costs no failing request (and no console error).
async function features() {
  try {
    const doc = (await call("GET", "/openapi.json")).data;
    const paths = doc.paths || {};
    const unkill = paths["/v1/unkill"]?.post?.requestBody?.content?.["application/json"]?.schema;
    st.features = {approvals: "/v1/approvals" in paths, drills: Boolean(paths["/v1/drills"]?.get),
                   breakGlass: Boolean(unkill?.properties?.break_glass)};
  } catch (exc) {
    // unknown, not absent: said on the page, and asked again at the next round (a gateway
    // with approvals would otherwise hide a waiting request for the whole session)
    st.features = {failed: exc instanceof ApiError ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : String(exc)};
  }
}

async function feature(name, path, panel, draw) {
  $(panel).hidden = !st.features[name];
  $(`nav-${name}`).hidden = !st.features[name];
  if (!st.features[name]) return;
  try {
    const data = await optional(path);
    if (data !== null) draw(data);
    // named by the feature list, yet answered 404/405 (a proxy no longer passing it, an
    // instance without the feature behind the same address): the last list drawn is not
    // current, so it goes, and the panel says why
    else render($(`${name}-body`), h("p", {class: "receipt error"}, `GET ${path} answered ` +
      "404/405 (not found here) though the API's feature list names it: a proxy in front " +
      "not passing it, or another instance behind this address? The list is not shown."));
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) throw exc;
    $(panel).hidden = false;
    render($(`${name}-body`), failure(exc));
  }
}

// One round of reads at a time: asked for while one runs (an action's answer arrives
// mid-round), another follows it at once, so what an action changed is drawn from reads
// made after it. The next round is always scheduled, whatever a round met.
async function refresh(session = st.session) {
  clearTimeout(st.timer);
  if (!st.who || session !== st.session) return;
  if (st.round) {
    st.again = true;
    return;
  }
  st.round = true;
  try {
    await round(session);
  } catch (exc) {
    if (session === st.session) render($("banner"), badge("warn", `The refresh failed: ${exc}`));
  } finally {
    st.round = false;
    const again = st.again;
    st.again = false;
    if (st.who && (again || session !== st.session)) refresh(st.session); // (a new sign-in's)
    else if (st.who) st.timer = setTimeout(() => refresh(session), REFRESH_MS);
  }
}

// This computer's clock a minute or more off the server's (a laptop's): said beside the
// banner's time, which is this computer's; the ages the page shows are the server's.
function clockOff() {
  const off = offset();
  if (Math.abs(off) < 60000) return null;
  const min = Math.round(Math.abs(off) / 60000);
  return h("span", {"data-testid": "clock-off"}, ` This computer's clock is ${min < 120 ? `${min} min`
    : `${Math.round(min / 60)} h`} ${off > 0 ? "behind" : "ahead of"} the server's: the ages shown are the server's.`);
}

// One round of reads. A round begun before a sign-out (or a new sign-in) stops at its
// next step: it neither draws nor calls the API without the token it started with.
async function round(session) {
  const can = st.who.can;
  // signed in by a proxy, the principal is whoever its session is now (another operator
  // signing in to it in this browser, say): asked every round, never taken from the load
  const proxied = st.via === "proxy" ? call("GET", "/v1/whoami") : Promise.resolve(null);
  const [status, fleet, traffic, audit, me] = await Promise.allSettled([
    readStatus(() => session === st.session), call("GET", "/v1/fleet"), call("GET", "/v1/traffic"),
    call("GET", `/v1/audit?limit=${AUDIT_ROWS}`), proxied]);
  if (session !== st.session) return;
  const denied = [status, fleet, traffic, audit, me].find((r) => r.status === "rejected" && r.reason.status === 401);
  if (denied) {
    if (st.via === "token") clearToken();
    showSignIn(`Signed out: ${denied.reason.status} ${denied.reason.type}: ${denied.reason.apiMessage}`);
    return;
  }
  const now = me.status === "fulfilled" && me.value ? me.value.data : null;
  if (now && (now.subject !== st.who.subject || String(now.scopes) !== String(st.who.scopes))) {
    const was = st.who.subject;
    const dropped = document.getElementById("action-dialog").open;
    showSignIn(null); // (nothing drawn for the earlier principal stays; an open dialog closes)
    if (!now.subject) return showSignIn("Signed out: the proxy no longer signs this page in; reload to sign in again.");
    signedIn(now, "proxy");
    render($("banner"), badge("warn", `Now signed in as ${now.subject} (was ${was}): the proxy's session changed.` +
      (dropped && !document.getElementById("action-dialog").open ? ` The dialog open for ${was} was closed; ` +
        "nothing was sent: open the action again to act as yourself." : "")));
    return;
  }
  if (fleet.status === "fulfilled") draw($("fleet-body"), () => renderFleet($("fleet-body"), fleet.value.data));
  else render($("fleet-body"), failure(fleet.reason));
  st.kills = status.status === "fulfilled" ? status.value.data.kills || [] : [];
  if (status.status === "fulfilled") {
    const sd = status.value.data;
    const tr = traffic.status === "fulfilled" ? traffic.value.data : null;
    draw($("kills-body"), () => renderKills($("kills-body"), sd, can, open));
    draw($("routes-body"), () => drawRoutes($("routes-body"), sd.routes, tr, can, open, st.kills,
      traffic.status === "rejected" ? failure(traffic.reason) : null));
  } else {
    render($("kills-body"), failure(status.reason));
    render($("routes-body"), failure(status.reason));
  }
  if (audit.status === "fulfilled") await auditPanel(audit.value);
  else render($("audit-body"), failure(audit.reason));
  if (session !== st.session) return;
  // (after the audit panel: the chain checked here is among the warnings)
  const chain = audit.status === "fulfilled" && st.chain.res && !st.chain.res.ok ? st.chain.res : null;
  draw($("warnings"), () => renderWarnings($("warnings"), status.status === "fulfilled" ? status.value.data : null,
                                           fleet.status === "fulfilled" ? fleet.value.data : null, chain));
  if (session !== st.session) return;
  // (said before the optional panels' reads, which may take their own deadlines)
  // (which reads failed, by name: "1 request(s) failed" sent the operator looking for it)
  const failedNames = [[status, "status"], [fleet, "fleet"], [traffic, "traffic"], [audit, "audit trail"]]
    .filter(([r]) => r.status === "rejected").map(([, name]) => name);
  const failed = failedNames.length;
  render($("banner"), failed ? badge("warn", `${failed} request(s) failed at ${new Date().toLocaleTimeString()} ` +
    `(${failedNames.join(", ")}: each panel says why)`)
    : h("span", {}, `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`),
    clockOff());
  if (st.features.failed) await features();
  if (session !== st.session) return;
  if (st.features.failed) {
    $("approvals").hidden = false;
    render($("approvals-body"), h("p", {class: "receipt error"}, "Requests waiting for approval (and drills) " +
      `cannot be shown: the API's feature list did not load (GET /openapi.json: ${st.features.failed}); asked again ` +
      "every round. `killgate approvals` lists them."));
    return;
  }
  try {
    await feature("approvals", "/v1/approvals", "approvals", (d) => renderApprovals($("approvals-body"), d, can, open,
      st.kills));
    if (session === st.session) {
      await feature("drills", "/v1/drills", "drills", (d) => renderDrills($("drills-body"), d));
    }
  } catch {
    if (st.via === "token") clearToken(); // (as a 401 of the reads above does)
    return showSignIn("Signed out: the token is no longer accepted");
  }
}

// The tab's token, at a (re)load: only a 401 (the token refused) removes it; an API that
// is down or restarting is said, and asked again, the token kept (at 3 a.m. it may not be
// at hand again).
async function resume() {
  try {
    return signedIn(await whoami(), "token");
  } catch (exc) {
    const msg = exc instanceof ApiError ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : String(exc);
    if (exc instanceof ApiError && exc.status === 401) {
      clearToken();
      return showSignIn(`Signed out: ${msg}`);
    }
    showSignIn(`Not signed in yet: ${msg}. The token is kept in this tab; trying again in ${REFRESH_MS / 1000} s.`);
    const session = st.session;
    st.timer = setTimeout(() => {
      if (session === st.session && token()) resume();
    }, REFRESH_MS);
  }
}

async function boot() {
  document.body.dataset.boot = "started"; // (js/started.js says a page that never got here)
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault(); // the token never leaves in a form submission (or a URL)
    const t = $("token").value.trim().replace(/^Bearer\s+/i, "");
    $("token").value = "";
    if (!t) return showSignIn("Paste a token first.");
    setToken(t);
    try {
      const who = await whoami();
      if (!who.subject) throw new Error("the admin API did not accept the token");
      signedIn(who, "token");
    } catch (exc) {
      clearToken();
      showSignIn(`Not signed in: ${exc instanceof ApiError ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : exc}`);
    }
  });
  $("signout").addEventListener("click", () => {
    clearToken();
    showSignIn("Signed out: the token was removed from this tab.");
  });
  // (a read may wait its whole deadline: the page says what it waits for, not "Loading…")
  render($("who"), h("span", {}, "Asking the admin API who is signed in (GET /v1/whoami)…"));
  if (token()) return resume();
  try {
    // no token of our own: a proxy in front of the admin listener may add one (an
    // answer without a subject: nobody signed this call in)
    const who = await whoami();
    return who.subject ? signedIn(who, "proxy") : showSignIn(null);
  } catch (exc) {
    showSignIn(exc instanceof ApiError ? `${exc.status} ${exc.type}: ${exc.apiMessage}` : String(exc));
  }
}

boot();
