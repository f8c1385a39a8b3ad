// The admin API's clock, as its answers carry it (their Date header): the ages the page
// shows ("2 min ago", "expires in 14 min") are the server's, never those of a laptop whose
// clock is off (a kill made a minute ago read "in 2 h" on a clock two hours slow).

let skew = 0; // the server's time minus the browser's, in ms

// An answer's Date header, with the browser's times just before the call and once its
// answer arrived. Date holds whole seconds (truncated), so an estimate within 1.5 s of the
// one kept is noise, not a clock that moved: the ages do not flicker between rounds.
export function learn(date, sent, received) {
  const t = Date.parse(date || "");
  if (Number.isNaN(t) || !(received >= sent)) return;
  const est = t + 500 - (sent + received) / 2;
  if (Math.abs(est - skew) > 1500) skew = Math.round(est);
}

// The server's time now, in ms since the epoch (as Date.now()).
export const now = () => Date.now() + skew;

// How far the browser's clock is from the server's, in ms (positive: the browser is slow).
export const offset = () => skew;
