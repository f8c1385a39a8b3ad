// The emergency local kill from the page: the same kill taken on this instance only while
// the state store cannot commit it (`POST /v1/kill?local=1`, as `killgate kill --local`),
// offered by a kill's dialog when the API answers 503 state_store_unavailable. Journaled and
// enforced here at once, merged into the store when it answers; the API still tries the
// store first and answers as any kill if it commits. Before, the page's operator met that
// 503 and had to find a shell and the CLI at that moment.

export function localKillSpec(spec) {
  return {...spec, key: `local-${spec.key}`, query: "local=1",
    confirm: spec.confirm ? "Yes: stop ALL traffic, on every route of this instance" : null,
    title: `Emergency local kill: ${spec.title.replace(/^Kill /, "")}`,
    changes: (body) => [["Where", "every instance (the store cannot commit)",
      "THIS instance and its --workers group only; other instances do NOT enforce it until " +
      "the store answers and it is merged (send it to each instance's admin address)"],
      ...spec.changes(body)]};
}

// its receipt (202 "local": true): where it is enforced, and where not
export function localReceipt(data) {
  return `LOCAL KILL ${data.kill} on ${data.instance} (id ${data.id}): the state store cannot ` +
    `commit (${data.store}); enforced on this instance and its --workers group only, NOT by ` +
    "other instances until the store answers and it is merged (the Kill switch panel shows it)";
}
