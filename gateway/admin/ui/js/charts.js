// Small line charts drawn as SVG: one line per version, told apart by colour, dash
// pattern and the version's name at the line's end; a text summary for screen readers.

import {h, s} from "./dom.js";

const W = 320, H = 96, LEFT = 4, RIGHT = 262, TOP = 10, BOTTOM = 80;

function niceMax(x) {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

// One chart. lines: [{name, values: [number|null, …], style: 0..3}]; fmt(v) → text.
export function lineChart({title, lines, t, fmt, floorMax = 0}) {
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null && Number.isFinite(v));
  const max = niceMax(Math.max(floorMax, ...all, 0));
  const n = Math.max(t.length, 1);
  const x = (i) => LEFT + (RIGHT - LEFT) * (n === 1 ? 1 : i / (n - 1));
  const y = (v) => BOTTOM - (BOTTOM - TOP) * Math.min(v / max, 1);
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                        "aria-label": summary(title, lines, fmt)},
    s("line", {x1: LEFT, x2: RIGHT, y1: BOTTOM, y2: BOTTOM, class: "axis"}),
    s("line", {x1: LEFT, x2: RIGHT, y1: TOP, y2: TOP, class: "grid"}),
    s("text", {x: LEFT, y: TOP - 2, class: "tick"}, fmt(max)),
    s("text", {x: LEFT, y: H - 4, class: "tick"}, minutesAgo(t)),
    s("text", {x: RIGHT, y: H - 4, class: "tick", "text-anchor": "end"}, "now"));
  const labels = [];
  for (const line of lines) {
    let d = "";
    let pen = false;
    line.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)} ${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d) svg.append(s("path", {d, class: `line s${line.style % 4}`}));
    const last = lastValue(line.values);
    if (last !== null) labels.push({name: line.name, style: line.style, y: y(last.v)});
  }
  // the version names at the right edge, nudged apart so they never overlap
  labels.sort((a, b) => b.y - a.y);
  let floor = H - 14;
  for (const l of labels) {
    l.y = Math.min(l.y + 3, floor);
    floor = l.y - 11;
  }
  for (const l of labels) {
    svg.append(s("text", {x: RIGHT + 4, y: l.y, class: `label s${l.style % 4}`}, l.name));
  }
  return h("figure", {class: "chartbox"}, h("figcaption", {}, title), svg);
}

function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) {
    if (values[i] !== null && Number.isFinite(values[i])) return {i, v: values[i]};
  }
  return null;
}

function minutesAgo(t) {
  if (!t.length) return "";
  const span = (t[t.length - 1] - t[0]) / 60;
  return `−${Math.round(span)} min`;
}

function summary(title, lines, fmt) {
  const parts = lines.map((l) => {
    const last = lastValue(l.values);
    return `${l.name}: ${last === null ? "no data" : fmt(last.v)}`;
  });
  return `${title}, latest: ${parts.join("; ") || "no traffic"}`;
}
