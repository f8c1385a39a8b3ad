// The admin API, as the console calls it. The token lives in sessionStorage only (gone
// when the tab closes; never in a URL, a cookie or localStorage) and travels only in the
// Authorization header of same-origin calls. Without a stored token no header is sent:
// an OIDC-fronting proxy in front of the admin listener adds its own.

import {parse} from "./json.js";

const KEY = "killgate.token";

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

// call("POST", "/v1/kill", {...}) → {status, data, text}; an error answer throws ApiError
// carrying the API's own type and message.
export async function call(method, path, body) {
  if (!path.startsWith("/") || path.startsWith("//")) throw new Error("same-origin paths only");
  const headers = {Accept: "application/json"};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin", cache: "no-store", redirect: "error",
      referrerPolicy: "no-referrer",
    });
  } catch (exc) {
    throw new ApiError(0, "unreachable", `the admin listener did not answer (${exc.message})`);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const err = data && typeof data === "object" && data.error;
    if (err && typeof err.type === "string") throw new ApiError(resp.status, err.type, String(err.message));
    throw new ApiError(resp.status, `http_${resp.status}`, text.slice(0, 500) || resp.statusText);
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
