//! Embedding `sso-core` in your own Rust service: the SQLite store, an in-memory audit sink, no
//! HTTP. [`run`] walks through the seed operation, `reset_totp_key`, the way a Zato service would
//! call `self.sso.user.reset_totp_key(cid, current_ust, user_id, key, key_label, current_app,
//! remote_addr)`.

use std::sync::Arc;

use sso_core::audit::MemoryAuditSink;
use sso_core::config::Config;
use sso_core::ids::{Cid, RemoteAddr};
use sso_core::secret::{Password, TotpCode};
use sso_core::service::NewUser;
use sso_core::{CallCtx, Sso};
use sso_store_sqlite::{SqliteOptions, SqliteStore};

/// What the walk-through did.
#[derive(Debug)]
pub struct Report {
    /// The key generated for the super-user's own reset (shown once).
    pub generated_key_len: usize,
    /// Whether the key the super-user supplied for another user was returned (it must not be).
    pub supplied_key_returned: bool,
    /// Whether the other user could log in with a code of the supplied key.
    pub login_with_new_key: bool,
    /// Audit records written.
    pub audit_records: usize,
}

/// Runs the walk-through on the SQLite database at `db_path`.
pub async fn run(db_path: &std::path::Path) -> Result<Report, Box<dyn std::error::Error>> {
    // 1. Stores from a URL, migrated; weak hashing parameters only to keep the example quick.
    let store = SqliteStore::open(&format!("sqlite://{}", db_path.display()), &SqliteOptions::default()).await?;
    store.migrate().await?;
    let mut cfg = Config::default();
    cfg.store.users = format!("sqlite://{}", db_path.display());
    cfg.password.allow_weak_hash_params = true;
    cfg.password.argon2_memory_kib = 64;
    cfg.password.argon2_iterations = 1;
    let audit = Arc::new(MemoryAuditSink::new());
    let sso = Sso::builder(cfg, store.stores()).audit_sink(audit.clone()).build().await?;

    // 2. A super-user and a user, created as the Operator (what the CLI does).
    let op = sso.operator_ctx(Cid::generate(), "example@localhost");
    let pw = Password::new("correct horse battery staple");
    let new = |name: &str| NewUser { username: Some(name.into()), password: Some(pw.clone()), ..Default::default() };
    sso.user().create_super_user(&op, new("admin")).await?;
    let bob = sso.user().create_user(&op, new("bob"), true).await?.admin.map(|a| a.user_id).ok_or("no user id")?;

    // 3. The super-user logs in: the context carries cid, UST, current_app and remote_addr.
    let ctx = CallCtx::new(Cid::generate(), "CRM", RemoteAddr::localhost());
    let session = sso.user().login(&ctx, "admin", &pw, None, None).await?;
    let ctx = ctx.with_ust(session.ust);

    // 4. reset_totp_key(ctx, user_id, key, key_label): own key, generated and returned once...
    let own = sso.user().reset_totp_key(&ctx, None, None, Some("Work laptop")).await?;
    let generated_key_len = own.as_ref().map_or(0, |k| k.expose_base32().len());

    // ...and another user's key, supplied by the super-user: never echoed back.
    let supplied = sso.user().reset_totp_key(&ctx, Some(&bob), Some("KMCLCWN4YPMD2WO3"), Some("Phone")).await?;

    // 5. Bob turns TOTP on and logs in with a code of the new key.
    let update = sso_core::service::UserUpdate { is_totp_enabled: Some(Some(true)), ..Default::default() };
    sso.user().update_user_by_id(&op, bob.as_str(), update).await?;
    let key = sso_core::secret::TotpKey::parse("KMCLCWN4YPMD2WO3")?;
    let now = u64::try_from(sso.now().as_secs()).unwrap_or(0);
    let code = sso_core::crypto::totp::code_for_step(key.expose_bytes(), sso_core::crypto::totp::step_of(now));
    let bob_ctx = CallCtx::new(Cid::generate(), "CRM", RemoteAddr::localhost());
    let login = sso.user().login(&bob_ctx, "bob", &pw, None, Some(&TotpCode::new(code.as_str()))).await;

    store.close().await;
    Ok(Report {
        generated_key_len,
        supplied_key_returned: supplied.is_some(),
        login_with_new_key: login.is_ok(),
        audit_records: audit.records().len(),
    })
}
