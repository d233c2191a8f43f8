//! `CounterStore`: each counter is one key (its own hash tag), changed by one script. Expiry is
//! logical (the `x` field / the `:expiry` suffix, against the caller's clock) and also a real key
//! TTL so idle keys disappear.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use sso_core::store::{CounterStore, StoreResult};
use sso_core::time::Timestamp;

use crate::RedisStore;

static RECORD_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 1
local prev = false
local x = redis.call('HGET', KEYS[1], 'x')
if x and tonumber(x) > tonumber(ARGV[1]) then
  n = tonumber(redis.call('HGET', KEYS[1], 'n')) + 1
  prev = redis.call('HGET', KEYS[1], 't')
end
redis.call('HSET', KEYS[1], 'n', n, 't', ARGV[1], 'x', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {n, prev}
",
    )
});

static ADVANCE_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local s, x = string.match(cur, '^(%d+):(%d+)$')
  if s and tonumber(x) > tonumber(ARGV[2]) and tonumber(s) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[3], 'PX', ARGV[4])
return 1
",
    )
});

fn ttl_ms(ttl: Duration) -> String {
    ttl.as_millis().max(1).to_string()
}

#[async_trait]
impl CounterStore for RedisStore {
    async fn record_failure(&self, key: &str, now: Timestamp, ttl: Duration) -> StoreResult<(u64, Option<Timestamp>)> {
        let k = self.key(key, "");
        let args = [now.as_micros().to_string(), now.plus(ttl).as_micros().to_string(), ttl_ms(ttl)];
        let (n, prev): (u64, Option<i64>) = self.conn.script(&RECORD_FAILURE, &[&k], &args, self.op_timeout()).await?;
        Ok((n, prev.map(Timestamp::from_micros)))
    }

    async fn get(&self, key: &str, now: Timestamp) -> StoreResult<Option<(u64, Timestamp)>> {
        let k = self.key(key, "");
        let (n, t, x): (Option<u64>, Option<i64>, Option<i64>) =
            self.conn.cmd(redis::cmd("HMGET").arg(&k).arg("n").arg("t").arg("x"), self.op_timeout()).await?;
        Ok(match (n, t, x) {
            (Some(n), Some(t), Some(x)) if x > now.as_micros() => Some((n, Timestamp::from_micros(t))),
            _ => None,
        })
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        let _: i64 = self.conn.cmd(redis::cmd("DEL").arg(self.key(key, "")), self.op_timeout()).await?;
        Ok(())
    }

    async fn advance_step(&self, key: &str, step: u64, now: Timestamp, ttl: Duration) -> StoreResult<bool> {
        let k = self.key(key, "");
        let args = [step.to_string(), now.as_micros().to_string(), now.plus(ttl).as_micros().to_string(), ttl_ms(ttl)];
        let ok: i64 = self.conn.script(&ADVANCE_STEP, &[&k], &args, self.op_timeout()).await?;
        Ok(ok == 1)
    }

    async fn delete_expired(&self, _now: Timestamp) -> StoreResult<u64> {
        // Keys expire by TTL.
        Ok(0)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_redis().await
    }
}
