"""Bounded reads of the heartbeats hash (`<p>:instances`) and its addresses (`:urls`).

Owns the scripts the redis store's fleet read runs (redisaux.py). Whoever can write to
redis could fill the heartbeats hash with forged entries: read whole and verified at every
/v1/status, console poll, sync and drill receipt, 200,000 of them cost every instance
seconds of CPU, again and again (RELIABILITY.md). So a hash of up to SCAN_BUDGET entries is
read whole, as before; a larger one (flooded) is read in bounded steps: the heartbeats of
the instances the caller already knows (listed at its last read: a flood cannot hide them,
whatever the hash's order), then SCAN_BUDGET entries more from where the last read stopped
(HSCAN's cursor: in turn every entry is read, a genuine instance that started during the
flood too); the rest is counted `flooded`. The refused ones read are removed while still as
refused (`PRUNE`: a value written again since is left), so a flood drains as it is read;
but never one signed with a key id we do not hold (`prunable`): an instance with another
key (mid-rotation, a wrong-key pod) wrote it, as far as we can tell, and the fleet's KEY
UNCONFIRMED and `retired` signals are judged by seeing it (pruned, it vanished from every
view between two of its beats). The
addresses are read by name for the live instances only, and orphans looked for in bounded
steps too.
"""

from __future__ import annotations

import string

from gateway.state.redislink import Script
from gateway.state.signing import Keyring

__all__ = ["DROP", "LIVE", "ORPHANS", "PRUNE", "SCAN_BUDGET", "URLS", "bounded_read", "prunable"]

#: entries of the heartbeats hash read (and verified) at one fleet read, at most, besides
#: the instances already known (a fleet past it is flooded: MAX_INSTANCES is 4096)
SCAN_BUDGET = 4096

def bounded_read(head: str = "") -> str:
    """The Lua of a bounded read of the hash KEYS[1]: whole when it has at most ARGV[1]
    entries, else the fields ARGV[3..] by name and an HSCAN step from cursor ARGV[2].
    -> {`head`entries in all, next cursor ('0': whole), field, value, ...}."""
    return f"""
local n = redis.call('HLEN', KEYS[1])
if n <= tonumber(ARGV[1]) then return {{{head}n, '0', redis.call('HGETALL', KEYS[1])}} end
local out = {{}}
for i = 3, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then out[#out + 1] = ARGV[i]; out[#out + 1] = v end
end
local r = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[1])
for _, x in ipairs(r[2]) do out[#out + 1] = x end
return {{{head}n, r[1], out}}
"""


# KEYS[1]: the heartbeats. ARGV[1]: the budget, ARGV[2]: the cursor, ARGV[3..]: the names
# known. -> {server ms, entries in all, next cursor ('0': whole), field, value, ...}
LIVE = Script("""
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)""" + bounded_read("ms, "))

_HEX = frozenset(string.hexdigits.lower().encode())


def prunable(record: bytes, keys: Keyring) -> bool:
    """Whether a refused heartbeat (`record`, after the store's stamp) may be removed: not
    when it names a key id (signing.key_id's shape) that is none of ours, which a genuine
    instance holding another key writes (left, it is read in bounded steps as before, and
    removed once 10 leases old); unsigned, malformed, or failing a key we hold: a forgery."""
    kid = record.split(b" ", 1)[0]
    return not (len(kid) == 8 and set(kid) <= _HEX and not keys.holds(kid.decode()))


# Remove the heartbeats ARGV (field, value, ...) from KEYS[1] while each is still the value
# refused (one written again since, by anyone, is judged at its next read)
PRUNE = Script("""
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
""")

# Remove the heartbeats ARGV (field, value, ...) that a read found long gone or refused as
# replays, and their addresses (KEYS[2]), while each is still the value judged: a genuine
# heartbeat its instance wrote while the read was judging the hash is left (removed by
# name, it vanished with its addresses from every view until its next beat)
DROP = Script("""
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i]); redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return n
""")

# The addresses (KEYS[2]) of the instances ARGV[3..], and ARGV[1] (a budget) fields more
# from cursor ARGV[2]: -> {next cursor, {value or false, ...}, {field, ...}}. The fields
# scanned are the candidate orphans (ORPHANS): read whole, a flooded urls hash cost as much
# as a flooded heartbeats hash
URLS = Script("""
local got = {}
for i = 3, #ARGV do got[#got + 1] = redis.call('HGET', KEYS[2], ARGV[i]) end
local r = redis.call('HSCAN', KEYS[2], ARGV[2], 'COUNT', ARGV[1])
local fields = {}
for i = 1, #r[2], 2 do fields[#fields + 1] = r[2][i] end
return {r[1], got, fields}
""")

# Remove the addresses (KEYS[2]) of the instances in ARGV that have no heartbeat (KEYS[1]):
# the heartbeat script writes both at once, and every removal takes both; so only a forgery
# is left alone, read at every fleet read for good (checked here, atomically: an instance
# whose first heartbeat landed since the caller's read keeps its addresses)
ORPHANS = Script("""
local n = 0
for _, f in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], f) == 0 then n = n + redis.call('HDEL', KEYS[2], f) end
end
return n
""")
