//! The Lua scripts of the cluster (SPEC §15.6). Every key of one connection shares the hash
//! tag `{cid}`, so each script touches one slot (Redis Cluster-ready).

/// Claim a session for this node: `gen += 1` (the fencing generation, SPEC §15.6), `node =
/// me`; a new session also gets its epoch and `seq = 0`. KEYS: session. ARGV: node, ttl_ms,
/// epoch. Returns the new generation.
pub(crate) const CLAIM: &str = r"
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'seq', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return gen
";

/// One push, one round trip: 410 if the session is gone, else `seq += 1`, append to the
/// outbox (bounded: MAXLEN and the resume window), publish to the owner's channel. KEYS:
/// session, outbox, channel. ARGV: body, outbox max entries, ttl_ms, the publish command
/// (`PUBLISH`, or `SPUBLISH` on a Redis Cluster: the channel shares the keys' slot).
/// Returns `{seq, receivers}`, `{-1, 0}` for no session.
pub(crate) const PUSH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'f', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local n = redis.call(ARGV[4], KEYS[3], seq .. '|' .. ARGV[1])
return {seq, n}
";

/// Fenced state write: only the current generation may write. KEYS: session. ARGV: gen,
/// blob. Returns 1 if written, 0 if the caller is stale (or the session is gone).
pub(crate) const WRITE_STATE: &str = r"
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', ARGV[2])
return 1
";

/// Fenced end of a session: delete it and its outbox if the caller still owns it. KEYS:
/// session, outbox. ARGV: gen.
pub(crate) const END: &str = r"
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
";

/// Fenced lease refresh; after a Redis restart (no session) the owner writes it again. KEYS:
/// session, outbox. ARGV: gen, ttl_ms, node, blob. Returns 1 refreshed, 2 re-created, 0
/// stale (another node claimed it).
pub(crate) const REFRESH: &str = r"
local gen = redis.call('HGET', KEYS[1], 'gen')
if gen == false then
  redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'node', ARGV[3], 'epoch', ARGV[5], 'seq', ARGV[6], 'st', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
if gen ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// Fenced session snapshot (SPEC §11.4, §15.6): the core's snapshot and the last push it
/// contains, written together. KEYS: session. ARGV: gen, snapshot, applied. Returns 1 if
/// written, 0 if the caller is stale (or the session is gone).
pub(crate) const SNAPSHOT: &str = r"
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'snap', ARGV[2], 'applied', ARGV[3])
return 1
";

/// A RESUME reached this node for a session another node held (SPEC §15.6): claim it (`gen
/// += 1`, fencing the old owner) and read what resuming needs. KEYS: session. ARGV: node,
/// ttl_ms. Returns `{gen, snap, applied, st, epoch}`, or nil if there is no session.
pub(crate) const RESUME_CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'snap', 'applied', 'st', 'epoch')
return {gen, v[1] or '', tonumber(v[2] or '0'), v[3] or '', tonumber(v[4] or '0')}
";
