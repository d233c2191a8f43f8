//! User and session attributes (spec/users.md §10): named JSON values, optionally encrypted and
//! expiring, owned by a user or a session. Every `*_many` call is all-or-nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::ctx::Caller;
use super::policy;
use super::sessions::SessionRef;
use super::trail::{Audit, Kind};
use super::views::Attr;
use super::{CallCtx, Inner};
use crate::crypto::aead::aad;
use crate::error::{Code, Reason, SsoError, SsoResult, StoreError};
use crate::ids::SessionId;
use crate::model::{AttrRecord, AttrScope, AttrWrite};
use crate::store::AttrStore;
use crate::time::{NEVER, Timestamp};

/// Attribute operations, reached as `sso.attr()`.
#[derive(Clone, Copy)]
pub struct AttrApi<'a> {
    pub(crate) s: &'a Inner,
}

/// Whose attributes.
#[derive(Debug, Clone)]
pub enum AttrTarget {
    /// A user's (`None` = the caller).
    User(Option<String>),
    /// A session's (`None` = the current session).
    Session(Option<SessionRef>),
}

/// One attribute to write.
#[derive(Debug, Clone)]
pub struct AttrInput {
    /// Name: 1..=191 characters without control characters.
    pub name: String,
    /// Any JSON value.
    pub value: Value,
    /// Seconds from now; `None` or 0 = never (for `update`, `None` keeps the current expiry).
    pub expiration: Option<u64>,
    /// Store under AEAD (for `update`, `None` keeps the current choice).
    pub encrypt: Option<bool>,
}

impl AttrInput {
    /// A plain, non-expiring attribute.
    pub fn new(name: impl Into<String>, value: Value) -> Self {
        AttrInput { name: name.into(), value, expiration: None, encrypt: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Set,
    Update,
}

/// A resolved target: scope, owner id, the store.
struct Owner {
    scope: AttrScope,
    id: String,
    store: Arc<dyn AttrStore>,
}

fn map_store(e: StoreError) -> SsoError {
    match e {
        StoreError::Conflict { .. } => SsoError::code(Code::E009001, Reason::Conflict),
        StoreError::NotFound => SsoError::code(Code::E009002, Reason::NotFound),
        other => other.into(),
    }
}

fn expiry_at(now: Timestamp, secs: u64) -> Option<Timestamp> {
    (secs > 0).then(|| now.add_secs(i64::try_from(secs).unwrap_or(i64::MAX)))
}

impl Inner {
    async fn attr_owner(&self, caller: &Caller, target: &AttrTarget, a: &mut Audit) -> SsoResult<Owner> {
        match target {
            AttrTarget::User(id) => {
                let u = self.target(caller, id.as_deref(), Code::E005001, a).await?;
                a.detail("scope", "user");
                Ok(Owner { scope: AttrScope::User, id: u.user_id.to_string(), store: self.stores.user_attrs.clone() })
            }
            AttrTarget::Session(r) => {
                a.detail("scope", "session");
                let now = self.now();
                let (sess, user) = match r {
                    None => {
                        let me = caller.session_user().ok_or_else(SsoError::invalid_input)?;
                        (me.session.clone(), me.user.clone())
                    }
                    Some(SessionRef::Ust(u)) => self.resolve_session(u, now).await?,
                    Some(SessionRef::Id(id)) => {
                        let sid =
                            SessionId::parse(id).ok_or_else(|| SsoError::code(Code::E007001, Reason::NoSuchSession))?;
                        let s = self
                            .stores
                            .sessions
                            .get(&sid)
                            .await?
                            .filter(|s| !s.is_expired(now))
                            .ok_or_else(|| SsoError::code(Code::E007001, Reason::NoSuchSession))?;
                        let u = self
                            .stores
                            .users
                            .get_by_id(&s.user_id)
                            .await?
                            .filter(|u| u.session_epoch == s.epoch)
                            .ok_or_else(|| SsoError::code(Code::E007001, Reason::NoSuchSession))?;
                        (std::sync::Arc::new(s), std::sync::Arc::new(u))
                    }
                };
                // Recorded even when refused: the caller sees `E007001`, the trail names the session.
                a.target_user(&user.user_id);
                a.target_session(&sess.session_id);
                if !caller.is_super() && caller.user_id() != Some(&user.user_id) {
                    return Err(SsoError::code(Code::E007001, Reason::NoSuchSession));
                }
                Ok(Owner {
                    scope: AttrScope::Session,
                    id: sess.session_id.to_string(),
                    store: self.stores.session_attrs.clone(),
                })
            }
        }
    }

    fn attr_aad(o: &Owner, name: &str) -> String {
        match o.scope {
            AttrScope::User => aad::user_attr(&o.id, name),
            AttrScope::Session => aad::session_attr(&o.id, name),
        }
    }

    fn check_names<'n>(&self, names: impl Iterator<Item = &'n String>) -> SsoResult<usize> {
        let mut seen = HashSet::new();
        for n in names {
            if !policy::valid_attr_name(n) || !seen.insert(n.as_str()) {
                return Err(SsoError::invalid_input());
            }
        }
        if seen.is_empty() {
            return Err(SsoError::code(Code::E008003, Reason::InvalidInput));
        }
        if seen.len() > self.cfg.attr.max_per_call {
            return Err(SsoError::invalid_input());
        }
        Ok(seen.len())
    }

    fn attr_view(&self, o: &Owner, r: AttrRecord, decrypt: bool) -> SsoResult<Attr> {
        let value = if r.is_encrypted && !decrypt {
            Value::String(r.value.clone())
        } else if r.is_encrypted {
            let text = self.keys.decrypt_string(&Self::attr_aad(o, &r.name), &r.value)?;
            serde_json::from_str(&text).map_err(|_| SsoError::internal())?
        } else {
            serde_json::from_str(&r.value).map_err(|_| SsoError::internal())?
        };
        Ok(Attr {
            name: r.name,
            value,
            creation_time: r.creation_time,
            last_modified: r.last_modified,
            expiration_time: r.expiration_time.unwrap_or(NEVER),
            is_encrypted: r.is_encrypted,
        })
    }

    async fn attr_write(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        target: &AttrTarget,
        mode: Mode,
        items: Vec<AttrInput>,
    ) -> SsoResult<()> {
        let caller = self.authenticate(ctx, a, false).await?;
        let o = self.attr_owner(&caller, target, a).await?;
        a.detail("names", items.iter().map(|i| i.name.clone()).collect::<Vec<_>>());
        a.detail("encrypt", items.iter().any(|i| i.encrypt == Some(true)));
        a.detail("expiration", items.iter().filter_map(|i| i.expiration).max().unwrap_or(0));
        self.check_names(items.iter().map(|i| &i.name))?;
        let now = self.now();
        let current: BTreeMap<String, AttrRecord> = if mode == Mode::Update {
            let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
            o.store.get_many(o.scope, &o.id, &names, now).await?.into_iter().map(|r| (r.name.clone(), r)).collect()
        } else {
            BTreeMap::new()
        };
        let mut writes = Vec::with_capacity(items.len());
        for i in &items {
            let json = serde_json::to_string(&i.value).map_err(|_| SsoError::invalid_input())?;
            if json.len() > self.cfg.attr.max_value_bytes {
                return Err(SsoError::invalid_input());
            }
            let encrypt = match (mode, i.encrypt) {
                (_, Some(e)) => e,
                (Mode::Update, None) => match current.get(&i.name) {
                    Some(r) => r.is_encrypted,
                    None => return Err(SsoError::code(Code::E009002, Reason::NotFound)),
                },
                (_, None) => false,
            };
            let value = if encrypt { self.keys.encrypt(&Self::attr_aad(&o, &i.name), json.as_bytes())? } else { json };
            let expiration_time = match (mode, i.expiration) {
                (Mode::Update, None) => None,
                (_, secs) => Some(expiry_at(now, secs.unwrap_or(0))),
            };
            writes.push(AttrWrite { name: i.name.clone(), value, is_encrypted: encrypt, expiration_time });
        }
        let r = match mode {
            Mode::Create => o.store.create_many(o.scope, &o.id, &writes, now).await,
            Mode::Set => o.store.set_many(o.scope, &o.id, &writes, now).await,
            Mode::Update => o.store.update_many(o.scope, &o.id, &writes, now).await,
        };
        r.map_err(map_store)
    }

    async fn attr_read(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        target: &AttrTarget,
        names: &[String],
    ) -> SsoResult<(Owner, Vec<AttrRecord>)> {
        let caller = self.authenticate(ctx, a, false).await?;
        let o = self.attr_owner(&caller, target, a).await?;
        a.detail("names", names.to_vec());
        self.check_names(names.iter())?;
        let found = o.store.get_many(o.scope, &o.id, names, self.now()).await.map_err(map_store)?;
        Ok((o, found))
    }
}

macro_rules! audited {
    ($self:ident, $ctx:ident, $op:literal, $kind:expr, |$a:ident| $body:expr) => {{
        let s = $self.s;
        let mut $a = s.audit($ctx, $op, $kind);
        let r = async { $body }.await;
        s.finish($a, r).await
    }};
}

impl AttrApi<'_> {
    /// `create`: `E009001` if the attribute exists unexpired.
    pub async fn create(&self, ctx: &CallCtx, target: AttrTarget, input: AttrInput) -> SsoResult<()> {
        audited!(self, ctx, "attr.create", Kind::Write, |a| self
            .s
            .attr_write(ctx, &mut a, &target, Mode::Create, vec![input])
            .await)
    }

    /// `create_many`: atomic.
    pub async fn create_many(&self, ctx: &CallCtx, target: AttrTarget, inputs: Vec<AttrInput>) -> SsoResult<()> {
        audited!(self, ctx, "attr.create_many", Kind::Write, |a| self
            .s
            .attr_write(ctx, &mut a, &target, Mode::Create, inputs)
            .await)
    }

    /// `set` (upsert): replaces value, expiry and encryption; keeps `creation_time`.
    pub async fn set(&self, ctx: &CallCtx, target: AttrTarget, input: AttrInput) -> SsoResult<()> {
        audited!(self, ctx, "attr.set", Kind::Write, |a| self
            .s
            .attr_write(ctx, &mut a, &target, Mode::Set, vec![input])
            .await)
    }

    /// `set_many`: atomic.
    pub async fn set_many(&self, ctx: &CallCtx, target: AttrTarget, inputs: Vec<AttrInput>) -> SsoResult<()> {
        audited!(self, ctx, "attr.set_many", Kind::Write, |a| self
            .s
            .attr_write(ctx, &mut a, &target, Mode::Set, inputs)
            .await)
    }

    /// `update`: `E009002` if missing; replaces the value, and expiry/encryption when given.
    pub async fn update(&self, ctx: &CallCtx, target: AttrTarget, input: AttrInput) -> SsoResult<()> {
        audited!(self, ctx, "attr.update", Kind::Write, |a| self
            .s
            .attr_write(ctx, &mut a, &target, Mode::Update, vec![input])
            .await)
    }

    /// `update_many`: atomic.
    pub async fn update_many(&self, ctx: &CallCtx, target: AttrTarget, inputs: Vec<AttrInput>) -> SsoResult<()> {
        audited!(self, ctx, "attr.update_many", Kind::Write, |a| self
            .s
            .attr_write(ctx, &mut a, &target, Mode::Update, inputs)
            .await)
    }

    /// `get`: `None` when missing or expired. With `decrypt = false` an encrypted value is the
    /// stored envelope text.
    pub async fn get(&self, ctx: &CallCtx, target: AttrTarget, name: &str, decrypt: bool) -> SsoResult<Option<Attr>> {
        audited!(self, ctx, "attr.get", Kind::Read, |a| {
            let (o, found) = self.s.attr_read(ctx, &mut a, &target, &[name.to_owned()]).await?;
            found.into_iter().next().map(|r| self.s.attr_view(&o, r, decrypt)).transpose()
        })
    }

    /// `get_many`: the found ones, by name.
    pub async fn get_many(
        &self,
        ctx: &CallCtx,
        target: AttrTarget,
        names: &[String],
        decrypt: bool,
    ) -> SsoResult<BTreeMap<String, Attr>> {
        audited!(self, ctx, "attr.get_many", Kind::Read, |a| {
            let (o, found) = self.s.attr_read(ctx, &mut a, &target, names).await?;
            found.into_iter().map(|r| Ok((r.name.clone(), self.s.attr_view(&o, r, decrypt)?))).collect()
        })
    }

    /// `exists`.
    pub async fn exists(&self, ctx: &CallCtx, target: AttrTarget, name: &str) -> SsoResult<bool> {
        audited!(self, ctx, "attr.exists", Kind::Read, |a| {
            let (_, found) = self.s.attr_read(ctx, &mut a, &target, &[name.to_owned()]).await?;
            Ok(!found.is_empty())
        })
    }

    /// `exists_many`: name → whether it exists.
    pub async fn exists_many(
        &self,
        ctx: &CallCtx,
        target: AttrTarget,
        names: &[String],
    ) -> SsoResult<BTreeMap<String, bool>> {
        audited!(self, ctx, "attr.exists_many", Kind::Read, |a| {
            let (_, found) = self.s.attr_read(ctx, &mut a, &target, names).await?;
            let have: HashSet<String> = found.into_iter().map(|r| r.name).collect();
            Ok(names.iter().map(|n| (n.clone(), have.contains(n))).collect())
        })
    }

    /// `names`: sorted, without expired ones.
    pub async fn names(&self, ctx: &CallCtx, target: AttrTarget) -> SsoResult<Vec<String>> {
        audited!(self, ctx, "attr.names", Kind::Read, |a| {
            let caller = self.s.authenticate(ctx, &mut a, false).await?;
            let o = self.s.attr_owner(&caller, &target, &mut a).await?;
            let mut v = o.store.names(o.scope, &o.id, self.s.now()).await.map_err(map_store)?;
            v.sort();
            Ok(v)
        })
    }

    /// `delete`: `E009002` if missing.
    pub async fn delete(&self, ctx: &CallCtx, target: AttrTarget, name: &str) -> SsoResult<()> {
        let names = vec![name.to_owned()];
        audited!(self, ctx, "attr.delete", Kind::Write, |a| self.delete_inner(ctx, &mut a, &target, &names).await)
    }

    /// `delete_many`: atomic.
    pub async fn delete_many(&self, ctx: &CallCtx, target: AttrTarget, names: &[String]) -> SsoResult<()> {
        audited!(self, ctx, "attr.delete_many", Kind::Write, |a| self.delete_inner(ctx, &mut a, &target, names).await)
    }

    /// `set_expiry`: seconds from now (0 = never); `E009002` if missing.
    pub async fn set_expiry(&self, ctx: &CallCtx, target: AttrTarget, name: &str, expiration: u64) -> SsoResult<()> {
        let items = vec![(name.to_owned(), expiration)];
        audited!(self, ctx, "attr.set_expiry", Kind::Write, |a| self.expiry_inner(ctx, &mut a, &target, &items).await)
    }

    /// `set_expiry_many`: atomic.
    pub async fn set_expiry_many(&self, ctx: &CallCtx, target: AttrTarget, items: &[(String, u64)]) -> SsoResult<()> {
        audited!(self, ctx, "attr.set_expiry_many", Kind::Write, |a| self
            .expiry_inner(ctx, &mut a, &target, items)
            .await)
    }

    async fn delete_inner(&self, ctx: &CallCtx, a: &mut Audit, target: &AttrTarget, names: &[String]) -> SsoResult<()> {
        let s = self.s;
        let caller = s.authenticate(ctx, a, false).await?;
        let o = s.attr_owner(&caller, target, a).await?;
        a.detail("names", names.to_vec());
        s.check_names(names.iter())?;
        o.store.delete_many(o.scope, &o.id, names, s.now()).await.map_err(map_store)
    }

    async fn expiry_inner(
        &self,
        ctx: &CallCtx,
        a: &mut Audit,
        target: &AttrTarget,
        items: &[(String, u64)],
    ) -> SsoResult<()> {
        let s = self.s;
        let caller = s.authenticate(ctx, a, false).await?;
        let o = s.attr_owner(&caller, target, a).await?;
        a.detail("names", items.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
        a.detail("expiration", items.iter().map(|(_, e)| *e).max().unwrap_or(0));
        s.check_names(items.iter().map(|(n, _)| n))?;
        let now = s.now();
        let writes: Vec<(String, Option<Timestamp>)> =
            items.iter().map(|(n, e)| (n.clone(), expiry_at(now, *e))).collect();
        o.store.set_expiry_many(o.scope, &o.id, &writes, now).await.map_err(map_store)
    }
}
