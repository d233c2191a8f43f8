//! Session-scope `AttrStore`: attributes of session `sid` are fields of the hash `P{sid}:a`, each a
//! JSON `{v, enc, ct, lm, exp}` (times as strings of µs, so Lua never rounds them). The hash expires
//! with its session; every `*_many` is one script on the session's slot (all-or-nothing).
//! Attributes with an expiry are also listed in cleanup buckets so `delete_expired` never scans.
//! Redis holds no user attributes: the user scope is refused.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use serde::{Deserialize, Serialize};
use sso_core::StoreError;
use sso_core::model::{AttrRecord, AttrScope, AttrWrite};
use sso_core::store::{AttrEnvelope, AttrStore, StoreResult};
use sso_core::time::Timestamp;

use crate::RedisStore;

const LIVE: &str = r"
local now = tonumber(ARGV[1])
local function live(raw)
  if not raw then return false end
  local e = cjson.decode(raw)
  return e.exp == nil or e.exp == cjson.null or tonumber(e.exp) > now
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{LIVE}{body}"))
}

static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 2, #ARGV, 2 do
  if live(redis.call('HGET', KEYS[2], ARGV[i])) then return 0 end
end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
local t = redis.call('PEXPIRETIME', KEYS[1])
if t > 0 then redis.call('PEXPIREAT', KEYS[2], t) end
return 1
",
    )
});

static SET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 2, #ARGV, 2 do
  local raw = redis.call('HGET', KEYS[2], ARGV[i])
  local e = cjson.decode(ARGV[i + 1])
  if live(raw) then e.ct = cjson.decode(raw).ct end
  redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(e))
end
local t = redis.call('PEXPIRETIME', KEYS[1])
if t > 0 then redis.call('PEXPIREAT', KEYS[2], t) end
return 1
",
    )
});

static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
for i = 2, #ARGV, 2 do
  if not live(redis.call('HGET', KEYS[2], ARGV[i])) then return 0 end
end
for i = 2, #ARGV, 2 do
  local e = cjson.decode(redis.call('HGET', KEYS[2], ARGV[i]))
  local p = cjson.decode(ARGV[i + 1])
  e.v = p.v
  e.enc = p.enc
  e.lm = ARGV[1]
  if p.exp ~= nil then e.exp = p.exp end
  redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(e))
end
return 1
",
    )
});

static DELETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
for i = 2, #ARGV do
  if not live(redis.call('HGET', KEYS[2], ARGV[i])) then return 0 end
end
for i = 2, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
return 1
",
    )
});

static EXPIRY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
for i = 2, #ARGV, 2 do
  if not live(redis.call('HGET', KEYS[2], ARGV[i])) then return 0 end
end
for i = 2, #ARGV, 2 do
  local e = cjson.decode(redis.call('HGET', KEYS[2], ARGV[i]))
  if ARGV[i + 1] == '' then e.exp = cjson.null else e.exp = ARGV[i + 1] end
  e.lm = ARGV[1]
  redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(e))
end
return 1
",
    )
});

/// Compare-and-set of an attribute's value: 1 replaced, 0 not (changed or gone).
static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local e = cjson.decode(raw)
if e.v ~= ARGV[2] then return 0 end
e.v = ARGV[3]
e.enc = true
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(e))
return 1
",
    )
});

/// Deletes one attribute if it is still expired at `now`; 1 deleted, 0 not expired, -1 gone.
static DELETE_IF_EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if not raw then return -1 end
local e = cjson.decode(raw)
if e.exp ~= nil and e.exp ~= cjson.null and tonumber(e.exp) <= tonumber(ARGV[1]) then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
});

#[derive(Serialize, Deserialize)]
struct Entry {
    v: String,
    enc: bool,
    ct: String,
    lm: String,
    exp: Option<String>,
}

impl Entry {
    fn record(self, name: &str) -> Result<AttrRecord, StoreError> {
        let t = |s: &str| {
            s.parse::<i64>().map(Timestamp::from_micros).map_err(|_| StoreError::corrupt("redis attribute time"))
        };
        Ok(AttrRecord {
            name: name.to_owned(),
            value: self.v,
            is_encrypted: self.enc,
            creation_time: t(&self.ct)?,
            last_modified: t(&self.lm)?,
            expiration_time: self.exp.as_deref().map(t).transpose()?,
        })
    }
}

const BUCKETS: usize = 16;

fn session_only(scope: AttrScope) -> StoreResult<()> {
    match scope {
        AttrScope::Session => Ok(()),
        AttrScope::User => Err(StoreError::unavailable("redis holds no user attributes; use a SQL users store")),
    }
}

fn json(v: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::corrupt(e.to_string()))
}

impl RedisStore {
    fn attr_keys(&self, owner: &str) -> (String, String) {
        (self.key(owner, ":s"), self.key(owner, ":a"))
    }

    fn attr_bucket(&self, member: &str) -> String {
        let b = member.bytes().fold(0usize, |a, x| a.wrapping_mul(31).wrapping_add(usize::from(x))) % BUCKETS;
        self.key(&format!("sso-attr-cleanup-{b}"), ":e")
    }

    /// Lists expiring attributes for cleanup (stale entries are checked and dropped there).
    async fn note_expiring(
        &self,
        owner: &str,
        items: impl Iterator<Item = (&String, Option<Timestamp>)>,
    ) -> StoreResult<()> {
        for (name, exp) in items {
            if let Some(e) = exp {
                let member = format!("{owner}\t{name}");
                let _: i64 = self
                    .conn
                    .cmd(
                        redis::cmd("ZADD").arg(self.attr_bucket(&member)).arg(e.as_micros()).arg(member),
                        self.op_timeout(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn run(&self, s: &Script, owner: &str, args: Vec<String>) -> StoreResult<i64> {
        let (sk, ak) = self.attr_keys(owner);
        self.conn.script(s, &[&sk, &ak], &args, self.op_timeout()).await
    }

    async fn all(&self, owner: &str) -> StoreResult<HashMap<String, String>> {
        let (_, ak) = self.attr_keys(owner);
        self.conn.cmd(redis::cmd("HGETALL").arg(ak), self.op_timeout()).await
    }

    async fn write(&self, s: &Script, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        let n = now.as_micros().to_string();
        let mut args = vec![n.clone()];
        for i in items {
            let e = Entry {
                v: i.value.clone(),
                enc: i.is_encrypted,
                ct: n.clone(),
                lm: n.clone(),
                exp: i.expiration_time.flatten().map(|t| t.as_micros().to_string()),
            };
            args.push(i.name.clone());
            args.push(json(&e)?);
        }
        match self.run(s, owner, args).await? {
            1 => self.note_expiring(owner, items.iter().map(|i| (&i.name, i.expiration_time.flatten()))).await,
            0 => Err(StoreError::Conflict { what: "attr" }),
            _ => Err(StoreError::NotFound),
        }
    }
}

#[async_trait]
impl AttrStore for RedisStore {
    async fn create_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        session_only(scope)?;
        self.write(&CREATE, owner, items, now).await
    }

    async fn set_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        session_only(scope)?;
        self.write(&SET, owner, items, now).await
    }

    async fn update_many(&self, scope: AttrScope, owner: &str, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
        session_only(scope)?;
        let mut args = vec![now.as_micros().to_string()];
        for i in items {
            let mut p = serde_json::Map::new();
            p.insert("v".into(), serde_json::Value::from(i.value.clone()));
            p.insert("enc".into(), serde_json::Value::from(i.is_encrypted));
            if let Some(e) = i.expiration_time {
                p.insert(
                    "exp".into(),
                    e.map_or(serde_json::Value::Null, |t| serde_json::Value::from(t.as_micros().to_string())),
                );
            }
            args.push(i.name.clone());
            args.push(json(&p)?);
        }
        match self.run(&UPDATE, owner, args).await? {
            1 => self.note_expiring(owner, items.iter().map(|i| (&i.name, i.expiration_time.flatten()))).await,
            _ => Err(StoreError::NotFound),
        }
    }

    async fn get_many(
        &self,
        scope: AttrScope,
        owner: &str,
        names: &[String],
        now: Timestamp,
    ) -> StoreResult<Vec<AttrRecord>> {
        session_only(scope)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let (_, ak) = self.attr_keys(owner);
        let raw: Vec<Option<String>> = self.conn.cmd(redis::cmd("HMGET").arg(ak).arg(names), self.op_timeout()).await?;
        let mut out = Vec::new();
        for (name, r) in names.iter().zip(raw) {
            if let Some(text) = r {
                let e: Entry = serde_json::from_str(&text).map_err(|e| StoreError::corrupt(e.to_string()))?;
                let rec = e.record(name)?;
                if !rec.is_expired(now) {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }

    async fn names(&self, scope: AttrScope, owner: &str, now: Timestamp) -> StoreResult<Vec<String>> {
        session_only(scope)?;
        let mut out = Vec::new();
        for (name, text) in self.all(owner).await? {
            let e: Entry = serde_json::from_str(&text).map_err(|e| StoreError::corrupt(e.to_string()))?;
            if !e.record(&name)?.is_expired(now) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete_many(&self, scope: AttrScope, owner: &str, names: &[String], now: Timestamp) -> StoreResult<()> {
        session_only(scope)?;
        let mut args = vec![now.as_micros().to_string()];
        args.extend(names.iter().cloned());
        match self.run(&DELETE, owner, args).await? {
            1 => Ok(()),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn set_expiry_many(
        &self,
        scope: AttrScope,
        owner: &str,
        items: &[(String, Option<Timestamp>)],
        now: Timestamp,
    ) -> StoreResult<()> {
        session_only(scope)?;
        let mut args = vec![now.as_micros().to_string()];
        for (name, exp) in items {
            args.push(name.clone());
            args.push(exp.map(|t| t.as_micros().to_string()).unwrap_or_default());
        }
        match self.run(&EXPIRY, owner, args).await? {
            1 => self.note_expiring(owner, items.iter().map(|(n, e)| (n, *e))).await,
            _ => Err(StoreError::NotFound),
        }
    }

    async fn delete_expired(&self, now: Timestamp, limit: u64) -> StoreResult<u64> {
        let mut n = 0u64;
        for b in 0..BUCKETS {
            if n >= limit {
                break;
            }
            let bucket = self.key(&format!("sso-attr-cleanup-{b}"), ":e");
            let members: Vec<String> = self
                .conn
                .cmd(
                    redis::cmd("ZRANGE")
                        .arg(&bucket)
                        .arg("-inf")
                        .arg(now.as_micros())
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit - n),
                    self.op_timeout(),
                )
                .await?;
            for m in members {
                let Some((owner, name)) = m.split_once('\t') else { continue };
                let (_, ak) = self.attr_keys(owner);
                let r: i64 = self
                    .conn
                    .script(
                        &DELETE_IF_EXPIRED,
                        &[&ak],
                        &[now.as_micros().to_string(), name.to_owned()],
                        self.op_timeout(),
                    )
                    .await?;
                if r == 1 {
                    n += 1;
                }
                let _: i64 = self.conn.cmd(redis::cmd("ZREM").arg(&bucket).arg(&m), self.op_timeout()).await?;
            }
        }
        Ok(n)
    }

    async fn scan_envelopes(
        &self,
        scope: AttrScope,
        cursor: Option<String>,
        limit: u64,
    ) -> StoreResult<(Vec<AttrEnvelope>, Option<String>)> {
        if scope == AttrScope::User {
            return Ok((Vec::new(), None));
        }
        // Every live session is in a cleanup bucket: walk them with ZSCAN (cursor `bucket:zscan`).
        let (mut bucket, mut zc) = cursor
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .and_then(|(b, z)| Some((b.parse::<usize>().ok()?, z.to_owned())))
            .unwrap_or((0, "0".to_owned()));
        let mut out = Vec::new();
        while bucket < BUCKETS {
            let key = self.key(&format!("sso-cleanup-{bucket}"), ":e");
            let (next, items): (String, Vec<String>) = self
                .conn
                .cmd(redis::cmd("ZSCAN").arg(&key).arg(&zc).arg("COUNT").arg(limit.max(1)), self.op_timeout())
                .await?;
            for sid in items.iter().step_by(2) {
                for (name, text) in self.all(sid).await? {
                    if let Ok(e) = serde_json::from_str::<Entry>(&text)
                        && e.enc
                    {
                        out.push(AttrEnvelope { owner: sid.clone(), name, value: e.v });
                    }
                }
            }
            if next == "0" {
                bucket += 1;
                zc = "0".into();
            } else {
                zc = next;
            }
            if out.len() as u64 >= limit && bucket < BUCKETS {
                return Ok((out, Some(format!("{bucket}:{zc}"))));
            }
        }
        Ok((out, None))
    }

    async fn replace_envelope(
        &self,
        scope: AttrScope,
        owner: &str,
        name: &str,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        session_only(scope)?;
        let (_, ak) = self.attr_keys(owner);
        let r: i64 = self
            .conn
            .script(&REPLACE, &[&ak], &[name.to_owned(), old.to_owned(), new.to_owned()], self.op_timeout())
            .await?;
        Ok(r == 1)
    }
}
