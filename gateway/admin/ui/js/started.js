// Said when the console's modules did not load or run (a file refused by a proxy, a cut
// download, a browser without modules): the page stayed on "Loading…" forever, as if
// still waiting. A classic deferred script after main.js: it runs once main.js has run
// (its boot() marks the page at once) or failed to load.
"use strict";
(function () {
  if (document.body.dataset.boot) return;
  const ours = (e) => e.name.indexOf("/ui/") >= 0;
  const bad = performance.getEntriesByType("resource")
    .filter((e) => ours(e) && e.responseStatus >= 400)
    .map((e) => `${e.name.slice(e.name.indexOf("/ui/") + 4)} (HTTP ${e.responseStatus})`);
  const what = bad.length ? bad.join(", ") : "js/main.js or a module it imports (see the browser's console)";
  document.getElementById("who").textContent = "The console's scripts did not load";
  document.getElementById("signin-form").hidden = true; // (it needs the scripts to work)
  const p = document.createElement("p");
  p.className = "receipt error";
  p.textContent = `The console did not start: ${what} did not load or run. Nothing was ` +
    "read or changed; reload the page. If this persists, check what serves /ui/ (a proxy " +
    "in front of the admin listener?); the CLI (`killgate status`) does not need this page.";
  document.getElementById("signin-error").replaceChildren(p);
  document.getElementById("signin").hidden = false;
})();
