// The status document read by parts: with any canary running, /v1/status changes every
// second (its evidence), so a 304 on the whole document never came and every round read
// it all (about 860 KB at 1000 routes). A round asks for the index (GET /v1/status?fields=index:
// everything but the routes, and each route's tag), then only the routes whose tag changed
// (?fields=stable&routes=a,b); the others are kept from earlier rounds. What it hands back
// is the ?fields=stable document; the same object while nothing changed (a 304 on the index),
// and the same `routes` object while no route changed (routes.js then compares no card).

import {ApiError, call} from "./api.js";

const MAX_NAMES = 6000; // characters of names in one URL (the listener takes 8190 a line)

// What a routing table is of beside each route's own inputs (its state generation: kills,
// overrides, drills; its config; fail-closed): two reads that differ in it were answered
// from two tables (a kill, a reload between them), and their parts are never drawn together.
const era = (d) => JSON.stringify([d.generation, d.config && d.config.digest,
  d.store && d.store.fail_closed, d.store && d.store.synced]);

let kept = null; // {index, doc, tags: {route: tag}, routes: {route: part}}
export const forgetStatus = () => { kept = null; }; // (at a sign-out: nothing read is kept)

// `from`'s own keys copied into `into` as keys: a route named `__proto__` (the config allows
// it) stays a route; Object.assign's assignment set the object's prototype instead, and
// the route was never drawn, silently
function add(into, from) {
  for (const [k, v] of Object.entries(from)) {
    Object.defineProperty(into, k, {value: v, enumerable: true, writable: true, configurable: true});
  }
}

// The routes named, each with the tag of the answer it came in (a part is never kept under
// another answer's tag: one that changed and changed back, a kill lifted and set again,
// would never be asked for again), in reads of at most MAX_NAMES characters of names.
// null: an answer is of another table than the index's (a kill, a reload between the
// reads), or a route the index named is gone (a reload dropped it).
async function parts(names, index, still) {
  const routes = {};
  const tags = {};
  for (let i = 0; i < names.length;) {
    const batch = [names[i++]];
    let size = batch[0].length;
    while (i < names.length && size + 1 + names[i].length <= MAX_NAMES) {
      size += 1 + names[i].length;
      batch.push(names[i++]);
    }
    let got;
    if (!still()) throw new Abandoned();
    try {
      got = (await call("GET", `/v1/status?fields=stable&routes=${batch.join(",")}`)).data;
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 404 && exc.type === "unknown_route") return null;
      throw exc;
    }
    if (era(got) !== era(index) || !got.routes || !got.route_etags) return null;
    add(routes, got.routes);
    add(tags, got.route_etags);
  }
  return {routes, tags};
}

// A round's later reads are not sent once its session ended (a sign-out, a new sign-in
// between the index and the parts): without the token it started with they would go
// unsigned (401s in the console). The round that asked drops whatever this rejects with.
export class Abandoned extends Error {}

// → {status, data} as call() answers, data being the ?fields=stable document. `still`:
// whether the round that asks is still the page's (main.js's session).
export async function readStatus(still = () => true) {
  let answer;
  try {
    answer = await call("GET", "/v1/status?fields=index");
  } catch (exc) {
    // an instance from before ?fields=index (a rolling upgrade behind a balancer: 400)
    if (exc instanceof ApiError && exc.status === 400) return call("GET", "/v1/status?fields=stable");
    throw exc;
  }
  const index = answer.data;
  const tags = index.route_etags;
  if (!tags || typeof tags !== "object") return call("GET", "/v1/status?fields=stable");
  if (kept && kept.index === index) return {status: answer.status, data: kept.doc}; // (a 304: nothing changed)
  const names = Object.keys(tags);
  const changed = kept ? names.filter((n) => kept.tags[n] !== tags[n]) : names;
  let got = kept ? {routes: kept.routes, tags: kept.tags} : {routes: {}, tags: {}};
  if (changed.length) {
    const read = await parts(changed, index, still);
    // the table changed between the index and the parts (a kill, a reload): the index's
    // kills and generation beside the new table's routes would be a picture that never
    // was. This round draws the whole document (one table's); what is kept stays as it
    // was (parts and the tags they came with), and the next round asks again
    if (read === null) {
      if (!still()) throw new Abandoned();
      return call("GET", "/v1/status?fields=stable");
    }
    got = {routes: {...got.routes, ...read.routes}, tags: {...got.tags, ...read.tags}};
  }
  // the routes in the index's order, only those it names; the same object if none changed
  const gone = kept && Object.keys(kept.routes).length !== names.length;
  const routes = changed.length || gone || !kept ? Object.fromEntries(names.filter((n) => Object.hasOwn(got.routes, n))
    .map((n) => [n, got.routes[n]])) : kept.routes;
  const doc = {...index, routes};
  delete doc.route_etags;
  // (a route the answer lacked keeps no tag: asked for again next round)
  kept = {index, doc, routes, tags: Object.fromEntries(names.filter((n) => Object.hasOwn(routes, n))
    .map((n) => [n, got.tags[n]]))};
  return {status: answer.status, data: doc};
}
