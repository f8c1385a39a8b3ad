// The admin API, as the console calls it. The token lives in sessionStorage only (gone
// when the tab closes; never in a URL, a cookie or localStorage) and travels only in the
// Authorization header of same-origin calls. Without a stored token no header is sent:
// an OIDC-fronting proxy in front of the admin listener adds its own.
// Paths are the API's ("/v1/status"), called relative to the page's own place (<prefix>/ui/):
// behind a proxy that publishes the listener under a prefix, the calls keep that prefix.

import {learn} from "./clock.js";
import {parse} from "./json.js";

const KEY = "killgate.token";
const READ_S = 8; // a read's deadline (the page refreshes every 3 s)
const WRITE_S = 15; // a write's: it waits up to 2 s for the fleet's acks

export const token = () => sessionStorage.getItem(KEY);
export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);

export class ApiError extends Error {
  constructor(status, type, message) {
    super(`${status} ${type}: ${message}`);
    this.status = status;
    this.type = type;
    this.apiMessage = message;
  }
}

// How long a 429 too_many_attempts asks to wait (Retry-After in seconds, at least 1; else
// 1 s). A longer wait than a call may take is not shortened: the call gives up at once.
function retryAfter(resp) {
  const v = (resp.headers.get("Retry-After") || "").trim();
  return /^[0-9]{1,6}$/.test(v) && +v >= 1 ? +v : 1;
}

// call("POST", "/v1/kill", {...}) → {status, data, text}; an error answer throws ApiError
// carrying the API's own type and message. A call refused 429 too_many_attempts was
// refused before its token was checked (a flood of new tokens spent the budget): nothing
// was done, so it is sent again after its Retry-After while its deadline allows, as the
// CLI does (an operator signing in with a new token during such a flood must get through).
// `key`: a write's Idempotency-Key (actions.js: one per dialog submission), sent with every
// try of it: a write sent again after an answer that never came is answered with the
// first one's result, never applied twice.
// `subject`: who a write was prepared by (the dialog's principal), sent as
// X-Killgate-Subject: the API refuses it, 409 principal_changed, when the request is signed
// in as anyone else (behind a proxy whose session changed between the dialog and the send).
export async function call(method, path, body, key, subject) {
  const limit = (method === "GET" ? READ_S : WRITE_S) * 1000;
  const end = Date.now() + limit;
  for (;;) {
    try {
      return await once(method, path, body, Math.max(1000, end - Date.now()), key, subject);
    } catch (exc) {
      if (!(exc instanceof ApiError && exc.status === 429 && exc.type === "too_many_attempts")) {
        throw exc;
      }
      const wait = exc.retryAfter * 1000;
      if (Date.now() + wait + 1000 > end) {
        throw new ApiError(429, exc.type, wait + 1000 > limit
          ? `${exc.apiMessage} (nothing was done; that is longer than a call may wait: ` +
            `try again after ${exc.retryAfter} s)`
          : `${exc.apiMessage} (waited as long as a call may; try again in a moment)`);
      }
      await new Promise((done) => setTimeout(done, wait));
    }
  }
}

// A new Idempotency-Key: 128 random bits (getRandomValues works on a plain-http page too,
// where crypto.randomUUID does not exist).
export function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),
                    (x) => x.toString(16).padStart(2, "0")).join("");
}

// The last answer to each GET, parsed: a refresh whose answer is the same text as the last
// one's reuses it (with 1000 routes, parsing the status and traffic answers again every
// 3 s cost more than everything else the refresh does). An answer with an ETag (status,
// traffic) is asked for again with If-None-Match: a 304 has no body (nothing sent, decoded
// or parsed) and means the kept one is still the answer. (The API answers no-store, so the
// browser keeps nothing itself: this map is the only copy.)
const answers = new Map();
export const forgetAnswers = () => answers.clear(); // (at a sign-out: nothing read is kept)

async function once(method, path, body, limit, key, subject) {
  if (!path.startsWith("/") || path.startsWith("//")) throw new Error("same-origin paths only");
  const url = new URL(`..${path}`, document.baseURI); // (the page is <prefix>/ui/)
  if (url.origin !== location.origin) throw new Error("same-origin paths only");
  const headers = {Accept: "application/json"};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key !== undefined) headers["Idempotency-Key"] = key;
  // (a header holds Latin-1 only: a subject beyond it is not sent; the whoami asked first stands)
  if (typeof subject === "string" && /^[\x20-\x7e]+$/.test(subject)) headers["X-Killgate-Subject"] = subject;
  // (a read of some routes, ?routes=a,b, is not kept: each set named would stay for good)
  const keep = method === "GET" && !/[?&]routes=/.test(path);
  const kept = keep ? answers.get(path) : undefined;
  if (kept && kept.etag) headers["If-None-Match"] = kept.etag;
  // a listener that accepts and never answers (a stopped process, a black-holed path)
  // must not hold the page on its last picture: a call gives up after its deadline
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), limit);
  let resp;
  let text;
  const sent = Date.now();
  try {
    resp = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin", cache: "no-store", redirect: "manual", // never followed
      referrerPolicy: "no-referrer", signal: ctl.signal,
    });
    text = resp.type === "opaqueredirect" ? "" : await resp.text();
  } catch (exc) {
    if (!ctl.signal.aborted) {
      throw new ApiError(0, "unreachable", `the admin listener did not answer (${exc.message})`);
    }
    throw new ApiError(0, "timeout", method === "GET"
      ? `the admin listener did not answer within ${limit / 1000} s (stopped, overloaded or cut off?)`
      : `the admin listener did not answer within ${limit / 1000} s: the change may or may not have ` +
        "been applied; check the panels and the audit trail before trying again");
  } finally {
    clearTimeout(timer);
  }
  // (an opaque redirect has no Date; an answer a cache kept, Age, has the Date of when it
  // was stored: never the server's clock now, so it sets nothing)
  if (!resp.headers.has("Age")) learn(resp.headers.get("Date"), sent, Date.now());
  if (resp.type === "opaqueredirect") {
    // the admin API never redirects a call: a proxy in front does (its sign-in, once its
    // session ended); the listener did answer, so "unreachable" would send you elsewhere
    throw new ApiError(0, "redirected", `the answer to ${method} ${path.split("?")[0]} was a redirect, ` +
      "not the admin API's (a proxy's sign-in page, once its session ended?): reload the page to sign in again");
  }
  if (resp.status === 304 && kept && kept.etag) {
    // (for an ETag this page sent: the answer it kept, as if sent again)
    return {status: 200, data: kept.data, text: kept.text};
  }
  let data = null;
  const again = keep && resp.ok ? kept : undefined;
  if (again && again.text === text) {
    data = again.data; // (the same answer as the last: not parsed again; no caller changes it)
  } else {
    try { data = text ? parse(text) : null; } catch { data = null; }
  }
  // (the entry anew, with its ETag: also for the same text, in case a sign-out cleared it)
  if (keep && resp.ok) answers.set(path, {text, data, etag: resp.headers.get("ETag")});
  if (!resp.ok) {
    const err = data && typeof data === "object" && data.error;
    if (err && typeof err.type === "string") {
      const exc = new ApiError(resp.status, err.type, String(err.message));
      exc.retryAfter = retryAfter(resp);
      throw exc;
    }
    throw new ApiError(resp.status, `http_${resp.status}`, text.slice(0, 500) || resp.statusText);
  }
  // the API answers every call with a JSON object: anything else (a proxy's own page, a
  // sign-in form once its session ended) is said as such, never drawn as the state
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new ApiError(resp.status, "not_json", `the answer to ${method} ${path.split("?")[0]} is not ` +
      `the admin API's JSON (a proxy's page?): ${text.slice(0, 200) || "(empty)"}`);
  }
  return {status: resp.status, data, text};
}

// A GET whose 404 means "this gateway has no such feature" (approvals, drills): null.
export async function optional(path) {
  try {
    return (await call("GET", path)).data;
  } catch (exc) {
    if (exc instanceof ApiError && (exc.status === 404 || exc.status === 405)) return null;
    throw exc;
  }
}
