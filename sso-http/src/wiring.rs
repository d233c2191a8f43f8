//! Composing a deployment from configuration: stores chosen per trait by URL (stores with the same
//! URL share one pool), the key ring (loaded, or created on first start), the audit sinks, and the
//! `Sso` instance over them. No policy here: only construction.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sso_audit::{FileSink, FileSinkOptions, StdoutSink};
use sso_core::audit::AuditSink;
use sso_core::config::{Config, ConfigError, Fsync, SinkKind};
use sso_core::crypto::aead::KeyRing;
use sso_core::model::UserQuery;
use sso_core::store::Stores;
use sso_core::{Sso, StoreError};
use sso_store_postgres::{PgOptions, PgStore};
use sso_store_redis::{RedisAuditSink, RedisOptions, RedisStore};
use sso_store_sqlite::{SqliteOptions, SqliteStore};

/// Why a deployment could not be composed; each maps to a CLI exit code (spec/cli.md §3).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Configuration or key-ring problem: exit 3.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A backend is unavailable: exit 4.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: exit 5.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WireError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            WireError::Config(_) => 3,
            WireError::Unavailable(_) => 4,
            WireError::Internal(_) => 5,
        }
    }
}

/// An opened backend.
#[derive(Clone)]
enum Backend {
    Memory(Stores),
    Sqlite(SqliteStore),
    Postgres(PgStore),
    Redis(RedisStore),
}

impl Backend {
    /// Every store of a backend that holds users too.
    fn stores(&self) -> Option<Stores> {
        match self {
            Backend::Memory(s) => Some(s.clone()),
            Backend::Sqlite(s) => Some(s.stores()),
            Backend::Postgres(s) => Some(s.stores()),
            Backend::Redis(_) => None,
        }
    }

    /// Puts this backend's sessions (and session attributes) into `into`.
    fn sessions_into(&self, into: &mut Stores) {
        match self {
            Backend::Redis(r) => {
                let mut s = into.clone();
                r.apply(&mut s);
                into.sessions = s.sessions;
                into.session_attrs = s.session_attrs;
            }
            other => {
                if let Some(s) = other.stores() {
                    into.sessions = s.sessions;
                    into.session_attrs = s.session_attrs;
                }
            }
        }
    }

    /// Puts this backend's counters into `into`.
    fn counters_into(&self, into: &mut Stores) {
        match self {
            Backend::Redis(r) => {
                let mut s = into.clone();
                r.apply(&mut s);
                into.counters = s.counters;
            }
            other => {
                if let Some(s) = other.stores() {
                    into.counters = s.counters;
                }
            }
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Backend::Memory(_) | Backend::Redis(_) => Ok(()),
            Backend::Sqlite(s) => s.migrate().await,
            Backend::Postgres(s) => s.migrate().await,
        }
    }

    async fn pending(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Backend::Memory(_) | Backend::Redis(_) => Ok(Vec::new()),
            Backend::Sqlite(s) => s.pending_migrations().await,
            Backend::Postgres(s) => s.pending_migrations().await,
        }
    }

    async fn close(&self) {
        match self {
            Backend::Memory(_) | Backend::Redis(_) => {}
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }
}

/// The opened stores, with what must be closed on shutdown.
pub struct OpenStores {
    /// The store set.
    pub stores: Stores,
    backends: HashMap<String, Backend>,
}

impl OpenStores {
    /// Closes the pools (graceful shutdown).
    pub async fn close(&self) {
        for b in self.backends.values() {
            b.close().await;
        }
    }

    /// Pending migrations of every SQL store.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, WireError> {
        let mut out = Vec::new();
        for b in self.backends.values() {
            out.extend(b.pending().await.map_err(unavailable)?);
        }
        Ok(out)
    }

    /// Applies migrations to every SQL store.
    pub async fn migrate(&self) -> Result<(), WireError> {
        for b in self.backends.values() {
            b.migrate().await.map_err(unavailable)?;
        }
        Ok(())
    }
}

fn unavailable(e: StoreError) -> WireError {
    WireError::Unavailable(e.to_string())
}

/// Retries `connect` with exponential backoff until it succeeds or `store.startup_retry_s` passes.
async fn with_retry<T, F, Fut>(cfg: &Config, key: &str, mut connect: F) -> Result<T, WireError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(cfg.store.startup_retry_s);
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(store = key, error = %e, "store unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(WireError::Unavailable(format!("{key}: {e}"))),
        }
    }
}

async fn open_one(cfg: &Config, key: &str, url: &str, migrate: bool) -> Result<Backend, WireError> {
    let backend = if url.starts_with("memory://") {
        Backend::Memory(sso_core::memory::stores())
    } else if url.starts_with("sqlite:") {
        let opts = SqliteOptions {
            pool_max: cfg.store.pool_max,
            connect_timeout: Duration::from_millis(cfg.store.connect_timeout_ms),
            busy_timeout: Duration::from_millis(cfg.store.sqlite_busy_timeout_ms),
        };
        Backend::Sqlite(with_retry(cfg, key, || SqliteStore::open(url, &opts)).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let opts = PgOptions {
            pool_max: cfg.store.pool_max,
            connect_timeout: Duration::from_millis(cfg.store.connect_timeout_ms),
            op_timeout: Duration::from_millis(cfg.store.op_timeout_ms),
        };
        Backend::Postgres(with_retry(cfg, key, || PgStore::open(url, &opts)).await?)
    } else if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        let opts = RedisOptions {
            prefix: cfg.store.redis_prefix.clone(),
            connect_timeout: Duration::from_millis(cfg.store.connect_timeout_ms),
            op_timeout: Duration::from_millis(cfg.store.op_timeout_ms),
        };
        Backend::Redis(with_retry(cfg, key, || RedisStore::open(url, opts.clone())).await?)
    } else {
        return Err(WireError::Config(ConfigError::new(
            key,
            format!(
                "{} is not supported by this build (sqlite://, postgres://, redis://, redis+cluster:// and memory:// are)",
                crate::config::redact_url(url)
            ),
        )));
    };
    if migrate {
        backend.migrate().await.map_err(|e| WireError::Unavailable(format!("{key}: {e}")))?;
    }
    Ok(backend)
}

/// Opens the stores named by `store.users`, `store.sessions` and `store.counters`.
pub async fn open_stores(cfg: &Config, migrate: bool) -> Result<OpenStores, WireError> {
    let mut by_url: HashMap<String, Backend> = HashMap::new();
    let urls = [
        ("store.users", cfg.store.users.clone()),
        ("store.sessions", cfg.store.sessions_url().to_owned()),
        ("store.counters", cfg.store.counters_url().to_owned()),
    ];
    for (key, url) in &urls {
        if !by_url.contains_key(url) {
            let b = open_one(cfg, key, url, migrate).await?;
            by_url.insert(url.clone(), b);
        }
    }
    // The SQL audit sink in the users database shares its transactions (spec/audit.md G3).
    if sql_sink_colocated(cfg)
        && let Some(b) = by_url.get_mut(&urls[0].1)
    {
        let table = &cfg.audit.sql.table;
        *b = match b.clone() {
            Backend::Sqlite(st) => Backend::Sqlite(st.with_audit_table(table)),
            Backend::Postgres(st) => Backend::Postgres(st.with_audit_table(table)),
            other => other,
        };
    }
    let get = |url: &String| by_url.get(url).ok_or_else(|| WireError::Internal("store missing".into()));
    let mut stores = get(&urls[0].1)?.stores().ok_or_else(|| {
        WireError::Config(ConfigError::new("store.users", "Redis holds sessions and counters only, not users"))
    })?;
    // Sessions in the users database stay on the same store object, which lets the core read a
    // session and its user in one round trip.
    if urls[1].1 != urls[0].1 {
        get(&urls[1].1)?.sessions_into(&mut stores);
    }
    get(&urls[2].1)?.counters_into(&mut stores);
    Ok(OpenStores { stores, backends: by_url })
}

/// Whether the users store holds any user (then a missing key ring must not be recreated).
async fn has_data(stores: &Stores) -> Result<bool, WireError> {
    let (total, _) = stores.users.search(&UserQuery::default(), 0, 1).await.map_err(unavailable)?;
    Ok(total > 0)
}

/// Reads a key-ring file, warning when group or others can read it.
pub fn read_key_ring(path: &Path) -> Result<KeyRing, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("crypto.key_ring_file", format!("{}: {e}", path.display())))?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the key ring file is readable by group or others; chmod 600 it");
    }
    KeyRing::from_toml(&text).map_err(|e| ConfigError::new("crypto.key_ring_file", e.to_string()))
}

/// Writes a key ring atomically with mode 0600 (temporary file, then rename).
pub fn write_key_ring(path: &Path, ring: &KeyRing) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("toml.tmp");
    {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(ring.to_toml().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Loads the key ring (`crypto.key_ring_inline`, else the file), creating the file on first start
/// when allowed and no encrypted data exists yet. Returns the ring and whether it was created.
pub async fn key_ring(
    cfg: &Config,
    stores: &Stores,
    now: sso_core::time::Timestamp,
) -> Result<(KeyRing, bool), WireError> {
    if !cfg.crypto.key_ring_inline.is_empty() {
        let ring = KeyRing::from_toml(&cfg.crypto.key_ring_inline)
            .map_err(|e| ConfigError::new("crypto.key_ring_inline", e.to_string()))?;
        return Ok((ring, false));
    }
    let path = Path::new(&cfg.crypto.key_ring_file);
    if path.exists() {
        return Ok((read_key_ring(path)?, false));
    }
    if !cfg.crypto.create_key_ring {
        return Err(ConfigError::new("crypto.key_ring_file", format!("{} does not exist", path.display())).into());
    }
    if has_data(stores).await? {
        return Err(ConfigError::new(
            "crypto.key_ring_file",
            format!("{} does not exist but the store holds encrypted data; restore the key ring", path.display()),
        )
        .into());
    }
    let ring = KeyRing::generate(now).map_err(|e| WireError::Internal(e.to_string()))?;
    write_key_ring(path, &ring)
        .map_err(|e| ConfigError::new("crypto.key_ring_file", format!("cannot create {}: {e}", path.display())))?;
    Ok((ring, true))
}

/// Whether the `sql` sink is configured in the users database.
fn sql_sink_colocated(cfg: &Config) -> bool {
    cfg.audit.sinks.contains(&SinkKind::Sql) && (cfg.audit.sql.url.is_empty() || cfg.audit.sql.url == cfg.store.users)
}

/// The audit sinks of `audit.sinks`, in order. Opens a dedicated database or Redis where the sink's
/// URL names one that the stores do not use.
pub async fn audit_sinks(
    cfg: &Config,
    opened: &mut OpenStores,
    migrate: bool,
) -> Result<Vec<Arc<dyn AuditSink>>, WireError> {
    let mut sinks: Vec<Arc<dyn AuditSink>> = Vec::new();
    for kind in &cfg.audit.sinks {
        match kind {
            SinkKind::Stdout => sinks.push(Arc::new(StdoutSink::new(cfg.audit.stdout.required))),
            SinkKind::File => {
                let f = &cfg.audit.file;
                let sink = FileSink::open(FileSinkOptions {
                    path: f.path.clone().into(),
                    max_size_bytes: f.max_size_mb.saturating_mul(1024 * 1024),
                    max_files: f.max_files,
                    fsync: f.fsync == Fsync::Always,
                    required: f.required,
                })
                .map_err(|e| ConfigError::new("audit.file.path", format!("{}: {e}", f.path)))?;
                sinks.push(Arc::new(sink));
            }
            SinkKind::Sql => {
                let c = &cfg.audit.sql;
                let url = if c.url.is_empty() { cfg.store.users.clone() } else { c.url.clone() };
                if !opened.backends.contains_key(&url) {
                    let b = open_one(cfg, "audit.sql.url", &url, migrate).await?;
                    opened.backends.insert(url.clone(), b);
                }
                let sink: Arc<dyn AuditSink> = match opened.backends.get(&url) {
                    Some(Backend::Sqlite(st)) => Arc::new(
                        sso_store_sqlite::SqlAuditSink::open(st.clone(), &c.table, c.required)
                            .await
                            .map_err(unavailable)?,
                    ),
                    Some(Backend::Postgres(st)) => Arc::new(
                        sso_store_postgres::SqlAuditSink::open(st.clone(), &c.table, c.required)
                            .await
                            .map_err(unavailable)?,
                    ),
                    _ => {
                        return Err(ConfigError::new(
                            "audit.sinks",
                            "the sql sink needs store.users or audit.sql.url to be sqlite:// or postgres://",
                        )
                        .into());
                    }
                };
                sinks.push(sink);
            }
            SinkKind::Redis => {
                let c = &cfg.audit.redis;
                let url = if c.url.is_empty() { cfg.store.sessions_url().to_owned() } else { c.url.clone() };
                if !opened.backends.contains_key(&url) {
                    let b = open_one(cfg, "audit.redis.url", &url, migrate).await?;
                    opened.backends.insert(url.clone(), b);
                }
                match opened.backends.get(&url) {
                    Some(Backend::Redis(r)) => {
                        sinks.push(Arc::new(RedisAuditSink::new(r.clone(), &c.stream, c.maxlen, c.required)))
                    }
                    _ => {
                        return Err(ConfigError::new(
                            "audit.sinks",
                            "the redis sink needs audit.redis.url (or store.sessions) to be redis:// or redis+cluster://",
                        )
                        .into());
                    }
                }
            }
        }
    }
    Ok(sinks)
}

/// A composed deployment.
pub struct Deployment {
    /// The facade.
    pub sso: Sso,
    /// The stores (to close on shutdown).
    pub stores: OpenStores,
    /// The configuration in effect.
    pub cfg: Config,
}

/// Where a deployment runs: the server writes audit records to every configured sink; CLI
/// commands skip `stdout`, which carries their own output (one JSON document with `--output json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `sso serve`.
    Server,
    /// An administrative command.
    Cli,
}

/// Opens stores, loads (or creates) the key ring, opens sinks and builds the `Sso`.
pub async fn deploy(cfg: Config, migrate: bool, role: Role) -> Result<Deployment, WireError> {
    let mut opened = open_stores(&cfg, migrate).await?;
    let now = sso_core::time::Clock::now(&sso_core::time::SystemClock);
    let (ring, created) = key_ring(&cfg, &opened.stores, now).await?;
    if created {
        eprintln!(
            "NOTICE: created the key ring {} (mode 0600). Back it up: without it encrypted data cannot be read.",
            cfg.crypto.key_ring_file
        );
    }
    let mut builder = Sso::builder(cfg.clone(), opened.stores.clone()).key_ring(ring);
    if cfg.crypto.key_ring_inline.is_empty() {
        let path = cfg.crypto.key_ring_file.clone();
        builder = builder.key_ring_reloader(move || read_key_ring(Path::new(&path)).ok());
    }
    if let Some(n) =
        crate::notify::WebhookNotifier::start(&cfg.notify).map_err(|e| ConfigError::new("notify.webhook_url", e))?
    {
        builder = builder.notifier(Arc::new(n));
    }
    for sink in audit_sinks(&cfg, &mut opened, migrate).await? {
        if role == Role::Cli && sink.name() == "stdout" {
            continue;
        }
        builder = builder.audit_sink(sink);
    }
    let sso = builder.build().await.map_err(|e| match e {
        sso_core::service::BuildError::Config(c) => WireError::Config(c),
        sso_core::service::BuildError::Internal(s) => WireError::Internal(s),
    })?;
    Ok(Deployment { sso, stores: opened, cfg })
}
