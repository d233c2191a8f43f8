//! `SessionStore`: the record is a hash `P{sid}:s` whose TTL is its expiration; the per-user index
//! is a sorted set `P{uid}:sx` scored by expiration (ms). Verify is one round trip (`HMGET` of
//! the record's fields in a fixed order: half the values `HGETALL` sends, and no map to build).

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use sso_core::StoreError;
use sso_core::ids::{SessionId, UserId};
use sso_core::model::{HistoryEntry, SessionRecord};
use sso_core::store::{SessionStore, StoreResult};
use sso_core::time::Timestamp;

use crate::{RedisStore, ms_ceil, real_now_ms};

static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local cur = redis.call('PEXPIRETIME', KEYS[1])
if cur < tonumber(ARGV[3]) then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return 1
",
    )
});

static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
",
    )
});

static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local e = tonumber(redis.call('HGET', KEYS[1], 'e'))
local n = tonumber(ARGV[1])
if n > e then
  e = n
  redis.call('HSET', KEYS[1], 'e', ARGV[1])
end
local ms = math.floor(e / 1000) + 1
redis.call('PEXPIREAT', KEYS[1], ms)
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIREAT', KEYS[2], ms) end
return {redis.call('HGET', KEYS[1], 'u'), tostring(ms)}
",
    )
});

static SET_FIELD_IF_EXISTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
",
    )
});

static APPEND_HISTORY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local h = cjson.decode(redis.call('HGET', KEYS[1], 'hi') or '[]')
table.insert(h, cjson.decode(ARGV[1]))
local max = tonumber(ARGV[2])
while #h > max do table.remove(h, 1) end
if #h == 0 then
  redis.call('HSET', KEYS[1], 'hi', '[]')
else
  redis.call('HSET', KEYS[1], 'hi', cjson.encode(h))
end
return 1
",
    )
});

static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local u = redis.call('HGET', KEYS[1], 'u')
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
if n == 0 then return false end
return u
",
    )
});

fn hex(b: &[u8]) -> String {
    sso_core::crypto::digest::hex(b)
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok())).collect();
    bytes.and_then(|v| v.try_into().ok())
}

/// The hash fields of a record (spec/storage.md §4), as `field, value` pairs.
fn fields(s: &SessionRecord) -> Vec<String> {
    let mut f = vec![
        "h".into(),
        hex(&s.ust_hash),
        "u".into(),
        s.user_id.to_string(),
        "c".into(),
        s.creation_time.as_micros().to_string(),
        "e".into(),
        s.expiration_time.as_micros().to_string(),
        "ep".into(),
        s.epoch.to_string(),
        "ra".into(),
        s.remote_addr.clone(),
        "app".into(),
        s.current_app.clone(),
        "at".into(),
        s.auth_type.clone(),
        "ap".into(),
        s.auth_principal.clone(),
        "xs".into(),
        s.ext_session_id.clone(),
        "hi".into(),
        serde_json::to_string(&s.history).unwrap_or_else(|_| "[]".into()),
    ];
    if let Some(x) = s.abs_expiration_time {
        f.extend(["x".into(), x.as_micros().to_string()]);
    }
    if let Some(ua) = &s.user_agent {
        f.extend(["ua".into(), ua.clone()]);
    }
    f
}

/// The record's fields, in the order [`decode`] takes them (`HMGET`).
const FIELDS: [&str; 13] = ["h", "u", "c", "e", "x", "ep", "ra", "ua", "app", "at", "ap", "xs", "hi"];

/// The record from its [`FIELDS`]' values (`None`: the field is absent); `x` and `ua` are optional.
fn decode(sid: &SessionId, values: Vec<Option<String>>) -> Result<SessionRecord, StoreError> {
    let bad = |f: &str| StoreError::corrupt(format!("redis session field {f}"));
    let [h, u, c, e, x, ep, ra, ua, app, at, ap, xs, hi]: [Option<String>; 13] =
        values.try_into().map_err(|_| bad("count"))?;
    let req = |v: Option<String>, f: &str| v.ok_or_else(|| bad(f));
    let int = |v: Option<String>, f: &str| req(v, f)?.parse::<i64>().map_err(|_| bad(f));
    let history: Vec<HistoryEntry> = serde_json::from_str(&req(hi, "hi")?).map_err(|_| bad("hi"))?;
    Ok(SessionRecord {
        session_id: sid.clone(),
        ust_hash: unhex(&req(h, "h")?).ok_or_else(|| bad("h"))?,
        user_id: UserId::parse(&req(u, "u")?).ok_or_else(|| bad("u"))?,
        creation_time: Timestamp::from_micros(int(c, "c")?),
        expiration_time: Timestamp::from_micros(int(e, "e")?),
        abs_expiration_time: x
            .map(|x| x.parse::<i64>().map(Timestamp::from_micros).map_err(|_| bad("x")))
            .transpose()?,
        epoch: u64::try_from(int(ep, "ep")?).map_err(|_| bad("ep"))?,
        remote_addr: req(ra, "ra")?,
        user_agent: ua,
        current_app: req(app, "app")?,
        auth_type: req(at, "at")?,
        auth_principal: req(ap, "ap")?,
        ext_session_id: req(xs, "xs")?,
        history,
    })
}

/// Cleanup buckets: sorted sets of session ids scored by their logical expiry (µs), spread over 16
/// keys (and so over Cluster slots) by session id.
const BUCKETS: usize = 16;

fn bucket_of(sid: &str) -> usize {
    sid.bytes().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(usize::from(b))) % BUCKETS
}

/// When a record is due for cleanup: its idle deadline or absolute limit, whichever is first.
fn due(s: &SessionRecord) -> i64 {
    let e = s.expiration_time.as_micros();
    s.abs_expiration_time.map_or(e, |x| e.min(x.as_micros()))
}

impl RedisStore {
    fn ek(&self, bucket: usize) -> String {
        self.key(&format!("sso-cleanup-{bucket}"), ":e")
    }

    async fn due_set(&self, sid: &str, at_us: i64) -> StoreResult<()> {
        let _: i64 = self
            .conn
            .cmd(redis::cmd("ZADD").arg(self.ek(bucket_of(sid))).arg(at_us).arg(sid), self.op_timeout())
            .await?;
        Ok(())
    }

    fn sk(&self, sid: &str) -> String {
        self.key(sid, ":s")
    }

    fn ak(&self, sid: &str) -> String {
        self.key(sid, ":a")
    }

    fn ik(&self, uid: &str) -> String {
        self.key(uid, ":sx")
    }

    async fn index_add(&self, uid: &str, sid: &str, expiration_ms: i64) -> StoreResult<()> {
        let ik = self.ik(uid);
        let args = [sid.to_owned(), expiration_ms.to_string(), (expiration_ms + 60_000).to_string()];
        let _: i64 = self.conn.script(&INDEX_ADD, &[&ik], &args, self.op_timeout()).await?;
        Ok(())
    }

    async fn fetch(&self, sid: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.sk(sid.as_str())).arg(&FIELDS[..]);
        let values: Vec<Option<String>> = self.conn.cmd(&cmd, self.op_timeout()).await?;
        // A missing key answers every field with nil.
        if values.iter().all(Option::is_none) { Ok(None) } else { decode(sid, values).map(Some) }
    }

    /// Deletes the record and attributes, then the index member.
    async fn remove(&self, sid: &SessionId) -> StoreResult<bool> {
        let (sk, ak) = (self.sk(sid.as_str()), self.ak(sid.as_str()));
        let user: Option<String> = self.conn.script(&DELETE, &[&sk, &ak], &[], self.op_timeout()).await?;
        let _: i64 = self
            .conn
            .cmd(redis::cmd("ZREM").arg(self.ek(bucket_of(sid.as_str()))).arg(sid.as_str()), self.op_timeout())
            .await?;
        match user {
            Some(u) => {
                let _: i64 =
                    self.conn.cmd(redis::cmd("ZREM").arg(self.ik(&u)).arg(sid.as_str()), self.op_timeout()).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The index members of a user, pruned of passed scores (real clock).
    async fn members(&self, uid: &UserId) -> StoreResult<Vec<SessionId>> {
        let ik = self.ik(uid.as_str());
        let _: i64 = self
            .conn
            .cmd(
                redis::cmd("ZREMRANGEBYSCORE").arg(&ik).arg("-inf").arg(format!("({}", real_now_ms())),
                self.op_timeout(),
            )
            .await?;
        let ids: Vec<String> = self.conn.cmd(redis::cmd("ZRANGE").arg(&ik).arg(0).arg(-1), self.op_timeout()).await?;
        Ok(ids.iter().filter_map(|s| SessionId::parse(s)).collect())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        let exp_ms = ms_ceil(record.expiration_time.as_micros());
        self.index_add(record.user_id.as_str(), record.session_id.as_str(), exp_ms).await?;
        self.due_set(record.session_id.as_str(), due(record)).await?;
        let sk = self.sk(record.session_id.as_str());
        let mut args = vec![exp_ms.to_string()];
        args.extend(fields(record));
        let created: i64 = self.conn.script(&CREATE, &[&sk], &args, self.op_timeout()).await?;
        if created == 1 { Ok(()) } else { Err(StoreError::Conflict { what: "session_id" }) }
    }

    async fn get(&self, session_id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        self.fetch(session_id).await
    }

    async fn extend(&self, session_id: &SessionId, new_expiration: Timestamp) -> StoreResult<bool> {
        let (sk, ak) = (self.sk(session_id.as_str()), self.ak(session_id.as_str()));
        let r: Option<(String, String)> = self
            .conn
            .script(&EXTEND, &[&sk, &ak], &[new_expiration.as_micros().to_string()], self.op_timeout())
            .await?;
        match r {
            None => Ok(false),
            Some((uid, ms)) => {
                let ms: i64 = ms.parse().unwrap_or(0);
                self.index_add(&uid, session_id.as_str(), ms).await?;
                if let Some(rec) = self.fetch(session_id).await? {
                    self.due_set(session_id.as_str(), due(&rec)).await?;
                }
                Ok(true)
            }
        }
    }

    async fn set_epoch(&self, session_id: &SessionId, epoch: u64) -> StoreResult<bool> {
        let sk = self.sk(session_id.as_str());
        let ok: i64 = self
            .conn
            .script(&SET_FIELD_IF_EXISTS, &[&sk], &["ep".into(), epoch.to_string()], self.op_timeout())
            .await?;
        Ok(ok == 1)
    }

    async fn append_history(&self, session_id: &SessionId, entry: &HistoryEntry, max: u32) -> StoreResult<bool> {
        let sk = self.sk(session_id.as_str());
        let json = serde_json::to_string(entry).map_err(|e| StoreError::corrupt(e.to_string()))?;
        let ok: i64 = self.conn.script(&APPEND_HISTORY, &[&sk], &[json, max.to_string()], self.op_timeout()).await?;
        Ok(ok == 1)
    }

    async fn delete(&self, session_id: &SessionId) -> StoreResult<bool> {
        self.remove(session_id).await
    }

    async fn list_by_user(&self, user_id: &UserId) -> StoreResult<Vec<SessionRecord>> {
        let ids = self.members(user_id).await?;
        let fetched = futures_util::future::join_all(ids.iter().map(|id| self.fetch(id))).await;
        let mut out = Vec::new();
        for (id, r) in ids.iter().zip(fetched) {
            match r? {
                Some(rec) => out.push(rec),
                None => {
                    // A dangling index member: its record expired or was deleted.
                    let _: i64 = self
                        .conn
                        .cmd(redis::cmd("ZREM").arg(self.ik(user_id.as_str())).arg(id.as_str()), self.op_timeout())
                        .await?;
                }
            }
        }
        Ok(out)
    }

    async fn delete_by_user(&self, user_id: &UserId, except: Option<&SessionId>) -> StoreResult<u64> {
        let ids = self.members(user_id).await?;
        let mut n = 0;
        for id in ids.iter().filter(|id| Some(*id) != except) {
            if self.remove(id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        // Records also expire by TTL; this deletes what is due at `now` through the cleanup buckets
        // (never a scan of all keys).
        let mut n = 0u64;
        for b in 0..BUCKETS {
            if n >= limit {
                break;
            }
            let ek = self.ek(b);
            let ids: Vec<String> = self
                .conn
                .cmd(
                    redis::cmd("ZRANGE")
                        .arg(&ek)
                        .arg("-inf")
                        .arg(now.as_micros())
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit - n),
                    self.op_timeout(),
                )
                .await?;
            for id in ids.iter().filter_map(|s| SessionId::parse(s)) {
                match self.fetch(&id).await? {
                    Some(rec) if rec.is_expired(now) => {
                        if self.remove(&id).await? {
                            n += 1;
                        }
                    }
                    Some(rec) => self.due_set(id.as_str(), due(&rec)).await?,
                    None => {
                        let _: i64 =
                            self.conn.cmd(redis::cmd("ZREM").arg(&ek).arg(id.as_str()), self.op_timeout()).await?;
                    }
                }
            }
        }
        Ok(n)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_redis().await
    }
}
