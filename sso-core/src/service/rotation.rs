//! Key rotation (spec/totp.md §6, cli.md `sso keys …`): counting the envelopes under each key and
//! re-encrypting those not under the active key, with a compare-and-set per envelope.
//!
//! Operator only: these run from the CLI, never over HTTP. The caller owns the key ring file — it
//! adds the new key, hands the ring to [`Sso`](super::Sso) and marks the rotation finished after
//! [`KeyApi::reencrypt`] reports nothing left. A run that is stopped half-way is resumed by running
//! it again: every scan starts from the beginning and only touches envelopes not yet under the
//! active key, and a compare-and-set never overwrites a value changed in between, so nothing is
//! lost and nothing is encrypted twice.

use std::collections::BTreeMap;

use super::trail::Kind;
use super::{CallCtx, Inner};
use crate::crypto::aead::{self, aad};
use crate::error::{Code, Reason, SsoError, SsoResult};
use crate::ids::UserId;
use crate::model::AttrScope;
use crate::store::{AttrEnvelope, AttrStore, EnvelopeField};

/// How many envelopes use each key id (`sso keys list`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// Envelopes per key id (ids found in the data, whether or not the ring still holds them).
    pub by_key: BTreeMap<String, u64>,
}

impl KeyUsage {
    /// Envelopes under `key_id`.
    pub fn of(&self, key_id: &str) -> u64 {
        self.by_key.get(key_id).copied().unwrap_or(0)
    }

    /// Envelopes under any key other than `key_id`.
    pub fn not_under(&self, key_id: &str) -> u64 {
        self.by_key.iter().filter(|(k, _)| k.as_str() != key_id).map(|(_, n)| n).sum()
    }
}

/// Progress of a re-encryption run, reported after every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Envelopes re-encrypted so far.
    pub reencrypted: u64,
    /// Envelopes that needed it when the run started (the `…/10000` of `re-encrypted 1500/10000`).
    pub total: u64,
}

/// The result of [`KeyApi::reencrypt`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The key everything was moved to.
    pub key_id: String,
    /// Envelopes re-encrypted by this run.
    pub reencrypted: u64,
    /// Envelopes skipped because they changed between read and write (their new value was
    /// written by a running node; it is picked up by the next pass).
    pub raced: u64,
    /// Envelopes that could not be decrypted (unknown key or damaged): never overwritten.
    pub undecryptable: u64,
    /// Envelopes still not under the active key after the last pass (0 = the rotation is complete).
    pub remaining: u64,
}

/// Key operations, reached as `sso.keys()`. Operator contexts only.
#[derive(Clone, Copy)]
pub struct KeyApi<'a> {
    pub(crate) s: &'a Inner,
}

/// One envelope found by a scan, with what is needed to rewrite it.
enum Found {
    User { id: UserId, field: EnvelopeField, value: String },
    Attr { scope: AttrScope, e: AttrEnvelope },
}

impl Found {
    fn value(&self) -> &str {
        match self {
            Found::User { value, .. } => value,
            Found::Attr { e, .. } => &e.value,
        }
    }

    fn aad(&self) -> String {
        match self {
            Found::User { id, field, .. } => aad::user_field(id.as_str(), field.aad_field()),
            Found::Attr { scope: AttrScope::User, e } => aad::user_attr(&e.owner, &e.name),
            Found::Attr { scope: AttrScope::Session, e } => aad::session_attr(&e.owner, &e.name),
        }
    }
}

/// How many passes [`KeyApi::reencrypt`] makes at most: a second (and third) pass picks up
/// envelopes written under an old key by nodes that had not yet re-read the ring.
const MAX_PASSES: u32 = 3;

impl KeyApi<'_> {
    fn operator_only(ctx: &CallCtx) -> SsoResult<()> {
        if ctx.operator.is_some() { Ok(()) } else { Err(SsoError::not_allowed(Reason::NotSuperUser)) }
    }

    /// Counts the envelopes under each key id across users, user attributes and session
    /// attributes (`sso keys list`, and the check before `sso keys retire`).
    pub async fn usage(&self, ctx: &CallCtx, batch: u64) -> SsoResult<KeyUsage> {
        // A count of key ids, not an operation of spec/audit.md §3: not audited.
        Self::operator_only(ctx)?;
        self.count(batch).await
    }

    /// Re-encrypts, in batches of `batch`, every envelope whose key is not the active one, with a
    /// compare-and-set on the old envelope; `progress` is called after each batch. Repeats the
    /// scan (at most three passes) while envelopes under other keys remain and the last pass
    /// moved some. Audited as `keys.rotate` with `key_id` and `reencrypted`.
    pub async fn reencrypt(
        &self,
        ctx: &CallCtx,
        batch: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> SsoResult<RotationReport> {
        let s = self.s;
        let mut a = s.audit(ctx, "keys.rotate", Kind::Write);
        let active = s.keys.current().active_id().to_owned();
        a.detail("key_id", active.as_str());
        let mut report = RotationReport { key_id: active.clone(), ..Default::default() };
        let r = async {
            Self::operator_only(ctx)?;
            let mut left = self.count(batch).await?.not_under(&active);
            for _ in 0..MAX_PASSES {
                if left == 0 {
                    break;
                }
                let before = report.reencrypted;
                let total = report.reencrypted + left;
                // Each page is rewritten before the next is read, so a stopped run loses at most
                // one batch of work and memory stays bounded by the batch size.
                self.scan(batch, async |page: Vec<Found>| {
                    for f in page {
                        if aead::envelope_key_id(f.value()).is_some_and(|id| id != active) {
                            self.rewrite(&f, &mut report).await?;
                        }
                    }
                    progress(Progress { reencrypted: report.reencrypted, total: total.max(report.reencrypted) });
                    Ok(())
                })
                .await?;
                left = self.count(batch).await?.not_under(&active);
                if report.reencrypted == before {
                    break;
                }
            }
            report.remaining = left;
            Ok(())
        }
        .await;
        a.detail("reencrypted", report.reencrypted);
        s.finish(a, r).await?;
        Ok(report)
    }

    /// The check before `sso keys retire <key_id>`: refuses (`E008001`) the active key, the key of an
    /// unfinished rotation and any key that an envelope still uses (reason `conflict`, with the
    /// audit record naming the key). On `Ok` the caller removes the key from the ring. Audited as
    /// `keys.retire`.
    pub async fn check_retire(&self, ctx: &CallCtx, key_id: &str, batch: u64) -> SsoResult<()> {
        let s = self.s;
        let mut a = s.audit(ctx, "keys.retire", Kind::Write);
        a.detail("key_id", key_id);
        let r = async {
            Self::operator_only(ctx)?;
            let ring = s.keys.current();
            if !ring.has_key(key_id) {
                return Err(SsoError::code(Code::E008001, Reason::NotFound));
            }
            if ring.active_id() == key_id || ring.rotating() == Some(key_id) {
                return Err(SsoError::code(Code::E008001, Reason::InvalidInput));
            }
            let in_use = self.count(batch).await?.of(key_id);
            if in_use > 0 {
                return Err(SsoError::code(Code::E008001, Reason::Conflict));
            }
            Ok(())
        }
        .await;
        s.finish(a, r).await
    }

    async fn count(&self, batch: u64) -> SsoResult<KeyUsage> {
        let mut usage = KeyUsage::default();
        self.scan(batch, async |page: Vec<Found>| {
            for f in page {
                if let Some(id) = aead::envelope_key_id(f.value()) {
                    *usage.by_key.entry(id.to_owned()).or_default() += 1;
                }
            }
            Ok(())
        })
        .await?;
        Ok(usage)
    }

    /// Decrypts one envelope and writes it back under the active key if it is unchanged.
    async fn rewrite(&self, f: &Found, report: &mut RotationReport) -> SsoResult<()> {
        let s = self.s;
        let aad = f.aad();
        let Ok(plain) = s.keys.decrypt(&aad, f.value()) else {
            report.undecryptable += 1;
            return Ok(());
        };
        let fresh = s.keys.encrypt(&aad, &plain)?;
        let replaced = match f {
            Found::User { id, field, value } => {
                let replaced = s.stores.users.replace_envelope(id, *field, value, &fresh).await;
                s.user_cache.invalidate();
                replaced?
            }
            Found::Attr { scope, e } => {
                self.attr_store(*scope).replace_envelope(*scope, &e.owner, &e.name, &e.value, &fresh).await?
            }
        };
        if replaced {
            report.reencrypted += 1;
        } else {
            report.raced += 1;
        }
        Ok(())
    }

    fn attr_store(&self, scope: AttrScope) -> &dyn AttrStore {
        match scope {
            AttrScope::User => self.s.stores.user_attrs.as_ref(),
            AttrScope::Session => self.s.stores.session_attrs.as_ref(),
        }
    }

    /// Walks every envelope, a page at a time: user fields in user-id order, then user and
    /// session attributes.
    async fn scan(&self, batch: u64, mut each_page: impl AsyncFnMut(Vec<Found>) -> SsoResult<()>) -> SsoResult<()> {
        let s = self.s;
        let batch = batch.clamp(1, 100_000);
        let mut after: Option<UserId> = None;
        loop {
            let users = s.stores.users.scan_users(after.as_ref(), batch).await?;
            let Some(last) = users.last() else { break };
            after = Some(last.user_id.clone());
            let mut page = Vec::new();
            for u in &users {
                for field in EnvelopeField::ALL {
                    if let Some(v) = field.of(u).filter(|v| aead::is_envelope(v)) {
                        page.push(Found::User { id: u.user_id.clone(), field, value: v.to_owned() });
                    }
                }
            }
            each_page(page).await?;
        }
        for scope in [AttrScope::User, AttrScope::Session] {
            let store = self.attr_store(scope);
            let mut cursor = None;
            loop {
                let (found, next) = store.scan_envelopes(scope, cursor.take(), batch).await?;
                let page = found.into_iter().filter(|e| aead::is_envelope(&e.value)).map(|e| Found::Attr { scope, e });
                each_page(page.collect()).await?;
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(())
    }
}
