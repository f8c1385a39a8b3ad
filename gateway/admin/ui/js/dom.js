// DOM helpers. Everything the console shows is built with createElement and textContent:
// no HTML string is ever parsed (the page's CSP requires Trusted Types, so innerHTML
// would throw), so text from the API (an audit reason, a version name) stays text.

import {now} from "./clock.js";

const SVG_NS = "http://www.w3.org/2000/svg";

// Any value as text. What the page draws comes from the API, and an audit event from
// whoever could write to the store: an object JavaScript cannot turn into a string
// ({"toString": 0} throws) is shown as its JSON, never left to stop the drawing.
export function text(x) {
  if (typeof x === "string") return x;
  try {
    return String(x);
  } catch {
    try {
      return JSON.stringify(x) ?? "(unprintable)";
    } catch {
      return "(unprintable)";
    }
  }
}

// h("button", {class: "x", onclick: fn, "aria-label": "…"}, "text", child, …)
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = text(dv);
    else el.setAttribute(k, v === true ? "" : text(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : text(c));
  }
  return el;
}

// Icons drawn as SVG (no emoji font needed); always next to a word, never alone.
const ICONS = {
  killed: "M7 1h6l6 6v6l-6 6H7l-6-6V7z M5 9h10v2H5z",
  ok: "M3 10l5 5L17 5l-1.5-1.5L8 12 4.5 8.5z",
  warn: "M10 1l9 17H1z M9 7h2v6H9z M9 14h2v2H9z",
  lock: "M5 9V6a5 5 0 0 1 10 0v3h1v10H4V9z M7 9h6V6a3 3 0 0 0-6 0z",
  info: "M10 1a9 9 0 1 0 0 18a9 9 0 1 0 0-18z M9 8h2v7H9z M9 4h2v2H9z",
};

export function icon(name) {
  return s("svg", {class: `icon icon-${name}`, viewBox: "0 0 20 20", "aria-hidden": "true",
                   focusable: "false", width: 16, height: 16},
           s("path", {d: ICONS[name], "fill-rule": "evenodd"}));
}

// A status word with its icon: colour is never the only signal.
export function badge(kind, text, title) {
  const cls = {killed: "bad", bad: "bad", warn: "warn", ok: "good", lock: "note", info: "note"}[kind];
  const ic = {killed: "killed", bad: "warn", warn: "warn", ok: "ok", lock: "lock", info: "info"}[kind];
  // a sentence-long badge may wrap (a phone must not scroll sideways); a short one stays whole
  const long = String(text).length > 32 ? " long" : "";
  return h("span", {class: `badge ${cls}${long}`, title}, icon(ic), h("span", {}, text));
}

// Replace a container's children, keeping keyboard focus on the element with the same
// data-key (the refresh rebuilds sections every few seconds; focus must not jump).
export function render(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : undefined;
  container.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus({preventScroll: true});
  }
}

export function fmtNum(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (!Number.isFinite(x)) return "∞";
  return Number(x).toFixed(digits).replace(/\.0+$/, "");
}

export function fmtPct(x) {
  return x === null || x === undefined ? "–" : `${fmtNum(x * 100, 1)} %`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (!Number.isFinite(ms)) return "∞";
  if (ms >= 1000) return `${fmtNum(ms / 1000, 1)} s`;
  return `${fmtNum(ms, ms < 10 ? 1 : 0)} ms`;
}

// "12 s ago", "3 min ago"; a time still to come: "in 14 min"; more than a day away, the
// time itself, in UTC and said so (the operator's clock may be in any zone). Measured from
// the server's time (clock.js), not this computer's.
export function fmtAgo(iso) {
  const t = Date.parse(text(iso));
  if (Number.isNaN(t)) return text(iso ?? "");
  const s = Math.round((now() - t) / 1000);
  const span = Math.abs(s);
  const said = span < 60 ? `${span} s` : span < 3600 ? `${Math.round(span / 60)} min`
    : span < 86400 ? `${Math.round(span / 3600)} h` : null;
  if (said === null) return `${new Date(t).toISOString().slice(0, 16).replace("T", " ")} UTC`;
  return s >= 0 ? `${said} ago` : `in ${said}`;
}

export function short(str, n = 12) {
  str = text(str ?? "");
  return str.length > n ? str.slice(0, n) + "…" : str;
}
