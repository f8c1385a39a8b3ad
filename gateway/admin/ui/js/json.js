// JSON as the admin API writes it (Python's json module), read two ways:
// - parse(text): plain values; also accepts NaN / Infinity / -Infinity, which Python
//   writes for such floats and JSON.parse refuses;
// - parse(text, true): numbers kept as their text (new Num("100.0")), so an audit event
//   can be written back exactly as Python hashed it (100.0 is not 100 to SHA-256).
// canonical(value) writes Python's json.dumps(v, sort_keys=True, separators=(",", ":"),
// ensure_ascii=False): the form the audit chain's hashes cover (CONTRACT §4).

export class Num {
  constructor(text) { this.text = text; }
  valueOf() { return Number(this.text); }
}

export function parse(text, keepNumbers = false) {
  // plain values: the browser's own parser (a 1000-route status, 860 KB, takes it 40 ms
  // and this one 170), unless the text holds what only Python writes (NaN, Infinity)
  if (!keepNumbers) {
    try {
      return JSON.parse(text);
    } catch {
      // (read below: NaN / Infinity, or the error said where)
    }
  }
  let i = 0;
  const fail = (what) => { throw new SyntaxError(`bad JSON at ${i}: ${what}`); };
  const ws = () => { while (i < text.length && " \t\n\r".includes(text[i])) i++; };
  const lit = (word, value) => {
    if (text.startsWith(word, i)) { i += word.length; return value; }
    return fail(`expected ${word}`);
  };
  const number = () => {
    // (read where it stands, whatever its length: Python writes an int of any size)
    const re = /-?(?:Infinity|(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)/y;
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) fail("expected a value");
    i += m[0].length;
    return keepNumbers ? new Num(m[0]) : Number(m[0]);
  };
  const string = () => {
    i++; // opening quote
    let out = "";
    for (;;) {
      const j = text.slice(i).search(/["\\]/);
      if (j < 0) fail("unterminated string");
      out += text.slice(i, i + j);
      i += j;
      if (text[i] === '"') { i++; return out; }
      const e = text[i + 1];
      const simple = {'"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t"};
      if (e in simple) { out += simple[e]; i += 2; continue; }
      if (e !== "u" || !/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail("bad escape");
      out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
      i += 6;
    }
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj = {};
      ws();
      if (text[i] === "}") { i++; return obj; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a key");
        const k = string();
        ws();
        if (text[i++] !== ":") fail("expected ':'");
        Object.defineProperty(obj, k, {value: value(), enumerable: true, writable: true,
                                       configurable: true}); // ("__proto__" stays a key)
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i++] === "}") return obj;
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const arr = [];
      ws();
      if (text[i] === "]") { i++; return arr; }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i++] === "]") return arr;
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    if (c === "t") return lit("true", true);
    if (c === "f") return lit("false", false);
    if (c === "n") return lit("null", null);
    if (c === "N") return lit("NaN", keepNumbers ? new Num("NaN") : NaN);
    return number();
  };
  const v = value();
  ws();
  if (i !== text.length) fail("trailing text");
  return v;
}

const ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"};

function str(x) {
  // eslint-disable-next-line no-control-regex
  return '"' + x.replace(/["\\\u0000-\u001f]/g, (c) => ESC[c] ??
    "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0")) + '"';
}

// Python sorts keys by code point; JS compares UTF-16 units: the same below U+D800.
const byCodePoint = (a, b) => {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let k = 0; k < Math.min(x.length, y.length); k++) if (x[k] !== y[k]) return x[k] - y[k];
  return x.length - y.length;
};

export function canonical(v) {
  if (v === null) return "null";
  if (v === true) return "true";
  if (v === false) return "false";
  if (v instanceof Num) return v.text;
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : JSON.stringify(v);
  if (typeof v === "string") return str(v);
  if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
  return "{" + Object.keys(v).sort(byCodePoint).map((k) => str(k) + ":" + canonical(v[k])).join(",") + "}";
}
