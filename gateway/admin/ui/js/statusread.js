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

// Every route anew (the first round, more names than a URL holds, a route gone meanwhile): the
// index's tags are kept with it (a route that changed between the two reads is then asked
// for again next round: one read too many, never a change missed).
async function whole(tags) {
  const doc = (await call("GET", "/v1/status?fields=stable")).data;
  return {routes: doc.routes || {}, tags, doc};
}

async function some(names, tags) {
  try {
    const got = (await call("GET", `/v1/status?fields=stable&routes=${names.join(",")}`)).data;
    const routes = {...kept.routes, ...got.routes};
    return {routes, tags: {...kept.tags, ...got.route_etags}, head: got};
  } catch (exc) {
    // a route the index named is gone (a reload dropped it between the reads): all anew
    if (exc instanceof ApiError && exc.status === 404 && exc.type === "unknown_route") return whole(tags);
    throw exc;
  }
}

// → {status, data} as call() answers, data being the ?fields=stable document.
export async function readStatus() {
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
  if (changed.length && (!kept || changed.join(",").length > MAX_NAMES)) {
    got = await whole(tags);
  } else if (changed.length) {
    got = await some(changed, tags);
  }
  const read = got.doc || got.head; // (the answer the parts came in, if any was read)
  if (read && era(read) !== era(index)) {
    // the table changed between the index and the parts (a kill, a reload): the index's
    // kills and generation beside the new table's routes would be a picture that never
    // was. The whole document is one table's: it is drawn, with the index's tags kept (a
    // route that changed meanwhile is asked for again next round: never a change missed)
    const doc = got.doc || (await call("GET", "/v1/status?fields=stable")).data;
    const routes = doc.routes || {};
    kept = {index, doc, routes, tags: Object.fromEntries(Object.keys(routes)
      .filter((n) => Object.hasOwn(tags, n)).map((n) => [n, tags[n]]))};
    return {status: answer.status, data: doc};
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
