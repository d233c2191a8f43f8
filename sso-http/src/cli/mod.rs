//! The `sso` command (spec/cli.md). Administrative commands work directly on the configured stores
//! as the Operator caller: authorisation skipped, every other rule applied, each change audited
//! with actor `cli:<os-user>@<host>`. Secrets come from a prompt or standard input, never from
//! arguments.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sso_core::config::{Config, ConfigError};
use sso_core::crypto::aead::KeyRing;
use sso_core::ids::Cid;
use sso_core::secret::{Password, SecretStr};
use sso_core::service::{ListTarget, NewUser, SearchCtx};
use sso_core::{CallCtx, Sso, SsoError};

use crate::wiring::{self, WireError};

/// The `sso` single-sign-on server and administration tool.
#[derive(Debug, Parser)]
#[command(name = "sso", version, about)]
pub struct Cli {
    /// TOML configuration file (default: $SSO_CONFIG, else ./sso.toml if it exists).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Correlation id written to the audit records (default: generated).
    #[arg(long, global = true)]
    pub cid: Option<String>,
    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable.
    Text,
    /// One JSON document.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP server.
    Serve,
    /// Apply pending migrations to every SQL store.
    Migrate {
        /// Only list pending migrations (exit 1 if any).
        #[arg(long)]
        check: bool,
    },
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Key-ring commands.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Password-hashing commands.
    #[command(subcommand)]
    Hash(HashCmd),
    /// User administration.
    #[command(subcommand)]
    User(UserCmd),
    /// Session administration.
    #[command(subcommand)]
    Session(SessionCmd),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
}

/// `sso audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// The last records of the query sink.
    Tail {
        /// How many.
        #[arg(short = 'n', default_value_t = 20)]
        n: u32,
        /// Keep printing new records (polling once a second) until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// A filtered query, newest first. The global `--cid` is the correlation-id filter here.
    Query {
        /// Actor or target: a user id or a username.
        #[arg(long)]
        user: Option<String>,
        /// Operation name, e.g. user.reset_totp_key.
        #[arg(long)]
        op: Option<String>,
        /// success, denied or failure.
        #[arg(long)]
        outcome: Option<String>,
        /// From (inclusive).
        #[arg(long)]
        since: Option<String>,
        /// Until (inclusive).
        #[arg(long)]
        until: Option<String>,
        /// At most this many (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue after this record id.
        #[arg(long)]
        before: Option<String>,
    },
}

/// `sso config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate the configuration and print the effective values (secrets redacted).
    Check {
        /// Print the built-in defaults instead.
        #[arg(long)]
        defaults: bool,
    },
}

/// `sso keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create a new key ring at crypto.key_ring_file (mode 0600); refuses to overwrite.
    Generate,
    /// Key ids, creation times, which is active and how many envelopes use each.
    List,
    /// Add a key, make it active and re-encrypt every envelope under it; resumable by re-running.
    Rotate {
        /// Envelopes read and rewritten per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch_size: u64,
    },
    /// Remove a key after checking that it is not active and no envelope uses it.
    Retire {
        /// The key id.
        key_id: String,
    },
}

/// `sso hash …`
#[derive(Debug, Subcommand)]
pub enum HashCmd {
    /// Time argon2id here and print the fastest parameters taking at least the target.
    Calibrate {
        /// Target time per hash in milliseconds.
        #[arg(long, default_value_t = 250)]
        target_ms: u64,
        /// Memory ceiling in MiB.
        #[arg(long, default_value_t = 64)]
        max_memory_mib: u32,
        /// Parallelism.
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
    },
}

/// Profile fields shared by `user create` and `user create-super-user`.
#[derive(Debug, Args)]
pub struct Profile {
    /// Username.
    pub username: String,
    /// E-mail.
    #[arg(long)]
    pub email: Option<String>,
    /// Display name.
    #[arg(long)]
    pub display_name: Option<String>,
    /// First name.
    #[arg(long)]
    pub first_name: Option<String>,
    /// Middle name.
    #[arg(long)]
    pub middle_name: Option<String>,
    /// Last name.
    #[arg(long)]
    pub last_name: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "random_password")]
    pub password_stdin: bool,
    /// Generate a password and print it once.
    #[arg(long)]
    pub random_password: bool,
    /// The user must change the password at the next login.
    #[arg(long)]
    pub must_change: bool,
}

/// `sso user …`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a regular user (approved unless --no-approve).
    Create {
        /// Profile.
        #[command(flatten)]
        profile: Profile,
        /// Leave the approval to a super-user.
        #[arg(long)]
        no_approve: bool,
    },
    /// Create a super-user.
    CreateSuperUser {
        /// Profile.
        #[command(flatten)]
        profile: Profile,
    },
    /// Delete a user and everything that belongs to it.
    Delete {
        /// Username.
        username: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Lock a user (revokes the sessions).
    Lock {
        /// Username.
        username: String,
    },
    /// Unlock a user (clears the throttle counters).
    Unlock {
        /// Username.
        username: String,
    },
    /// Set a user's password.
    ChangePassword {
        /// Username.
        username: String,
        /// Read the password from standard input.
        #[arg(long, conflicts_with = "random_password")]
        password_stdin: bool,
        /// Generate a password and print it once.
        #[arg(long)]
        random_password: bool,
        /// Password lifetime in days.
        #[arg(long)]
        expiry_days: Option<i64>,
        /// The user must change it at the next login.
        #[arg(long)]
        must_change: bool,
    },
    /// Reset a user's TOTP key (prints a generated key and its otpauth URI).
    ResetTotpKey {
        /// Username.
        username: String,
        /// Read the key from standard input instead of generating one.
        #[arg(long)]
        key_stdin: bool,
        /// Label.
        #[arg(long)]
        label: Option<String>,
        /// Also draw the QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Import Zato users from JSON lines (one row of Zato's user table per line).
    Import {
        /// The JSON-lines file.
        file: PathBuf,
        /// Validate without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Search users.
    List {
        /// Exact username.
        #[arg(long)]
        username: Option<String>,
        /// E-mail.
        #[arg(long)]
        email: Option<String>,
        /// Case-insensitive substring of any name field.
        #[arg(long)]
        name: Option<String>,
        /// before_decision, approved or rejected.
        #[arg(long)]
        approval_status: Option<String>,
        /// Page.
        #[arg(long)]
        page: Option<i64>,
        /// Page size.
        #[arg(long)]
        page_size: Option<i64>,
    },
}

/// `sso session …`
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// A user's sessions (never a UST).
    List {
        /// Username.
        username: String,
    },
    /// Revoke one session, or all of a user's sessions.
    Revoke {
        /// Session id.
        #[arg(required_unless_present = "user")]
        session_id: Option<String>,
        /// All sessions of this user.
        #[arg(long, conflicts_with = "session_id")]
        user: Option<String>,
    },
}

/// A command failure with its exit code (spec/cli.md §3).
#[derive(Debug)]
pub enum Failure {
    /// Refused by an SSO rule: 1.
    Rule(SsoError, String),
    /// Usage: 2.
    Usage(String),
    /// Configuration or key ring: 3.
    Config(ConfigError),
    /// Backend unavailable: 4.
    Unavailable(String),
    /// Internal: 5.
    Internal(String),
    /// A check that found something (migrate --check): 1, message only.
    Check(String),
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Config(c) => Failure::Config(c),
            WireError::Unavailable(s) => Failure::Unavailable(s),
            WireError::Internal(s) => Failure::Internal(s),
        }
    }
}

fn rule(e: SsoError) -> Failure {
    match e {
        SsoError::Unavailable { backend } => Failure::Unavailable(format!("{backend} unavailable")),
        SsoError::Internal { .. } => Failure::Internal("internal error".into()),
        other => {
            let msg = other.reason().as_str().replace('_', " ");
            Failure::Rule(other, msg)
        }
    }
}

impl Failure {
    fn code(&self) -> i32 {
        match self {
            Failure::Rule(..) | Failure::Check(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Config(_) => 3,
            Failure::Unavailable(_) => 4,
            Failure::Internal(_) => 5,
        }
    }
}

struct Out {
    format: Output,
    quiet: bool,
}

impl Out {
    fn result(&self, text: &str, json: Value) {
        let mut o = std::io::stdout().lock();
        let _ = match self.format {
            Output::Text => writeln!(o, "{text}"),
            Output::Json => writeln!(o, "{json}"),
        };
    }

    fn notice(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    fn failure(&self, f: &Failure) {
        let (code, name, message) = match f {
            Failure::Rule(e, m) => (e.real_code().as_str().to_owned(), e.real_code().name().to_owned(), m.clone()),
            Failure::Usage(m) => ("usage".into(), "usage".into(), m.clone()),
            Failure::Config(c) => ("config".into(), "config".into(), c.to_string()),
            Failure::Unavailable(m) => ("unavailable".into(), "unavailable".into(), m.clone()),
            Failure::Internal(m) => ("internal".into(), "internal".into(), m.clone()),
            Failure::Check(m) => ("check".into(), "check".into(), m.clone()),
        };
        match (self.format, f) {
            (Output::Json, _) => {
                let doc = json!({"error": {"code": code, "name": name, "message": message}});
                let _ = writeln!(std::io::stdout().lock(), "{doc}");
            }
            (Output::Text, Failure::Rule(..)) => eprintln!("error: {code} {name}: {message}"),
            (Output::Text, Failure::Config(c)) => eprintln!("{c}"),
            (Output::Text, _) => eprintln!("error: {message}"),
        }
    }
}

/// The OS user running this process: `$USER`, `$LOGNAME`, else the passwd entry of the real uid.
fn os_user() -> String {
    if let Some(u) = ["USER", "LOGNAME"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty())) {
        return u;
    }
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:").and_then(|r| r.split_whitespace().next().map(str::to_owned)))
    });
    let name = uid.and_then(|uid| {
        std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)? == uid).then(|| name.to_owned())
            })
        })
    });
    name.unwrap_or_else(|| "unknown".into())
}

/// `<os-user>@<host>`.
pub fn operator_name() -> String {
    format!("{}@{}", os_user(), sso_core::service::host_name())
}

fn read_stdin_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// A password from standard input, a terminal prompt (typed twice) or generated.
fn password_source(stdin: bool, random: bool, out: &Out) -> Result<(Password, bool), Failure> {
    if random {
        return Ok((Password::generate().map_err(rule)?, true));
    }
    if stdin {
        return Ok((Password::new(read_stdin_line()?), false));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage("no password source: use --password-stdin or --random-password".into()));
    }
    let a = rpassword::prompt_password("Password: ").map_err(|e| Failure::Usage(e.to_string()))?;
    let b = rpassword::prompt_password("Repeat: ").map_err(|e| Failure::Usage(e.to_string()))?;
    if a != b {
        return Err(Failure::Usage("the passwords differ".into()));
    }
    out.notice("");
    Ok((Password::new(a), false))
}

struct Admin {
    sso: Sso,
    ctx: CallCtx,
    stores: wiring::OpenStores,
}

async fn admin(cfg: Config, cid: Option<&str>) -> Result<Admin, Failure> {
    let migrate = cfg.store.migrate_on_start;
    let d = wiring::deploy(cfg, migrate, wiring::Role::Cli).await?;
    let cid = match cid {
        Some(c) => Cid::parse(c).ok_or_else(|| Failure::Usage("--cid: 1..=64 characters of [A-Za-z0-9._:-]".into()))?,
        None => Cid::generate(),
    };
    let ctx = d.sso.operator_ctx(cid, &operator_name());
    Ok(Admin { sso: d.sso, ctx, stores: d.stores })
}

async fn user_id_of(a: &Admin, username: &str) -> Result<String, Failure> {
    match a.sso.user().get_user_by_username(&a.ctx, username).await.map_err(rule)? {
        Some(v) => Ok(v.admin.map(|x| x.user_id.to_string()).unwrap_or_default()),
        None => Err(Failure::Rule(
            SsoError::code(sso_core::Code::E008001, sso_core::Reason::NoSuchUser),
            "user does not exist".into(),
        )),
    }
}

async fn create(a: &Admin, p: Profile, super_user: bool, approve: bool, out: &Out) -> Result<(), Failure> {
    let (password, generated) = password_source(p.password_stdin, p.random_password, out)?;
    let data = NewUser {
        username: Some(p.username),
        password: Some(password.clone()),
        password_must_change: Some(p.must_change),
        email: p.email,
        display_name: p.display_name,
        first_name: p.first_name,
        middle_name: p.middle_name,
        last_name: p.last_name,
        ..Default::default()
    };
    let view = if super_user {
        a.sso.user().create_super_user(&a.ctx, data).await
    } else {
        a.sso.user().create_user(&a.ctx, data, approve).await
    }
    .map_err(rule)?;
    let id = view.admin.map(|x| x.user_id.to_string()).unwrap_or_default();
    if generated {
        out.result(
            &format!("{id}\npassword: {}", password.expose()),
            json!({"user_id": id, "password": password.expose()}),
        );
    } else {
        out.result(&id, json!({"user_id": id}));
    }
    Ok(())
}

/// The key-ring file of `sso keys rotate|retire`; an inline ring has no file to rewrite (exit 3).
fn ring_file(cfg: &Config) -> Result<PathBuf, Failure> {
    if cfg.crypto.key_ring_inline.is_empty() {
        Ok(PathBuf::from(&cfg.crypto.key_ring_file))
    } else {
        Err(Failure::Config(ConfigError::new(
            "crypto.key_ring_inline",
            "an inline key ring cannot be rewritten; move it to crypto.key_ring_file first",
        )))
    }
}

fn write_ring(path: &std::path::Path, ring: &KeyRing) -> Result<(), Failure> {
    wiring::write_key_ring(path, ring)
        .map_err(|e| Failure::Config(ConfigError::new("crypto.key_ring_file", format!("{}: {e}", path.display()))))
}

/// `sso keys list|rotate|retire`: the ring file is handled here; counting, re-encrypting and the
/// retire rule are `sso.keys()`.
async fn run_keys(cmd: KeysCmd, cfg: Config, cid: Option<&str>, out: &Out) -> Result<(), Failure> {
    const COUNT_BATCH: u64 = 1000;
    match cmd {
        KeysCmd::List => {
            let ring = if cfg.crypto.key_ring_inline.is_empty() {
                wiring::read_key_ring(std::path::Path::new(&cfg.crypto.key_ring_file)).map_err(Failure::Config)?
            } else {
                KeyRing::from_toml(&cfg.crypto.key_ring_inline)
                    .map_err(|e| Failure::Config(ConfigError::new("crypto.key_ring_inline", e.to_string())))?
            };
            let a = admin(cfg, cid).await?;
            let usage = a.sso.keys().usage(&a.ctx, COUNT_BATCH).await.map_err(rule);
            a.stores.close().await;
            let usage = usage?;
            let mut rows: Vec<(String, String, u64)> =
                ring.key_ids().into_iter().map(|(id, created)| (id.clone(), created, usage.of(&id))).collect();
            // Envelopes under a key the ring no longer holds cannot be read: show them too.
            for (id, n) in &usage.by_key {
                if !ring.has_key(id) {
                    rows.push((id.clone(), "missing from the ring".to_owned(), *n));
                }
            }
            let text: Vec<String> = rows
                .iter()
                .map(|(id, created, n)| {
                    let active = if id == ring.active_id() { " active" } else { "" };
                    let rotating = if ring.rotating() == Some(id.as_str()) { " (rotation unfinished)" } else { "" };
                    format!("{id} {created} {n} envelopes{active}{rotating}")
                })
                .collect();
            let doc: Vec<Value> = rows
                .iter()
                .map(|(id, c, n)| {
                    json!({"key_id": id, "created": c, "active": id == ring.active_id(), "envelopes": n,
                           "known": ring.has_key(id)})
                })
                .collect();
            out.result(&text.join("\n"), Value::from(doc));
            Ok(())
        }
        KeysCmd::Rotate { batch_size } => {
            let path = ring_file(&cfg)?;
            let mut ring = wiring::read_key_ring(&path).map_err(Failure::Config)?;
            // An unfinished rotation is resumed under its key; otherwise a new key becomes active
            // and the file is rewritten (atomically, 0600) before any envelope is touched.
            if ring.rotating() == Some(ring.active_id()) {
                out.notice(&format!("resuming the rotation to {}", ring.active_id()));
            } else {
                let now = sso_core::time::Clock::now(&sso_core::time::SystemClock);
                let id = ring.add_key(now).map_err(rule)?;
                ring.set_rotating(Some(id.clone()));
                write_ring(&path, &ring)?;
                out.notice(&format!("added key {id} and made it active"));
            }
            let a = admin(cfg, cid).await?;
            let quiet = out.quiet;
            let mut progress = move |p: sso_core::service::Progress| {
                if !quiet {
                    eprintln!("re-encrypted {}/{}", p.reencrypted, p.total);
                }
            };
            let r = a.sso.keys().reencrypt(&a.ctx, batch_size, &mut progress).await.map_err(rule);
            a.stores.close().await;
            let report = r?;
            let doc = json!({"key_id": report.key_id, "reencrypted": report.reencrypted,
                             "remaining": report.remaining, "undecryptable": report.undecryptable});
            if report.remaining == 0 {
                ring.set_rotating(None);
                write_ring(&path, &ring)?;
                out.result(&format!("{} active; re-encrypted {}", report.key_id, report.reencrypted), doc);
                Ok(())
            } else {
                out.result(
                    &format!(
                        "{} active; re-encrypted {}; {} envelopes are still under other keys ({} cannot be decrypted)",
                        report.key_id, report.reencrypted, report.remaining, report.undecryptable
                    ),
                    doc,
                );
                Err(Failure::Check("the rotation is unfinished: run `sso keys rotate` again".into()))
            }
        }
        KeysCmd::Retire { key_id } => {
            let path = ring_file(&cfg)?;
            let mut ring = wiring::read_key_ring(&path).map_err(Failure::Config)?;
            let a = admin(cfg, cid).await?;
            let r = a.sso.keys().check_retire(&a.ctx, &key_id, COUNT_BATCH).await;
            a.stores.close().await;
            r.map_err(|e| {
                let why = match e.reason() {
                    sso_core::Reason::NotFound => "no such key in the ring",
                    sso_core::Reason::InvalidInput => "the key is active (or an unfinished rotation's target)",
                    sso_core::Reason::Conflict => "envelopes still use the key; run `sso keys rotate` first",
                    _ => return rule(e),
                };
                Failure::Rule(e, why.into())
            })?;
            ring.remove_key(&key_id);
            write_ring(&path, &ring)?;
            out.result(&format!("retired {key_id}"), json!({"retired": key_id}));
            Ok(())
        }
        KeysCmd::Generate => {
            let path = PathBuf::from(&cfg.crypto.key_ring_file);
            if path.exists() {
                return Err(Failure::Config(ConfigError::new(
                    "crypto.key_ring_file",
                    format!("{} already exists", path.display()),
                )));
            }
            let now = sso_core::time::Clock::now(&sso_core::time::SystemClock);
            let ring = KeyRing::generate(now).map_err(rule)?;
            wiring::write_key_ring(&path, &ring)
                .map_err(|e| Failure::Config(ConfigError::new("crypto.key_ring_file", e.to_string())))?;
            out.result(
                &format!("{} {}", path.display(), ring.active_id()),
                json!({"path": path.display().to_string(), "key_id": ring.active_id()}),
            );
            Ok(())
        }
    }
}

async fn run_user(cmd: UserCmd, cfg: Config, cid: Option<&str>, out: &Out) -> Result<(), Failure> {
    let a = admin(cfg, cid).await?;
    let r = run_user_with(&a, cmd, out).await;
    a.stores.close().await;
    r
}

async fn run_user_with(a: &Admin, cmd: UserCmd, out: &Out) -> Result<(), Failure> {
    match cmd {
        UserCmd::Create { profile, no_approve } => create(a, profile, false, !no_approve, out).await,
        UserCmd::CreateSuperUser { profile } => create(a, profile, true, true, out).await,
        UserCmd::Delete { username, yes } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(Failure::Usage("refusing to delete without --yes when not on a terminal".into()));
                }
                eprint!("Delete user {username} and everything that belongs to it? [y/N] ");
                let answer = read_stdin_line()?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err(Failure::Usage("not confirmed".into()));
                }
            }
            a.sso.user().delete_user_by_username(&a.ctx, &username).await.map_err(|e| {
                if e.is_code(sso_core::Code::E008001) {
                    Failure::Rule(e, "user does not exist".into())
                } else {
                    rule(e)
                }
            })?;
            out.result("ok", json!({"status": "ok"}));
            Ok(())
        }
        UserCmd::Lock { username } => {
            let id = user_id_of(a, &username).await?;
            a.sso.user().lock_user(&a.ctx, &id).await.map_err(rule)?;
            out.result("ok", json!({"status": "ok"}));
            Ok(())
        }
        UserCmd::Unlock { username } => {
            let id = user_id_of(a, &username).await?;
            a.sso.user().unlock_user(&a.ctx, &id).await.map_err(rule)?;
            out.result("ok", json!({"status": "ok"}));
            Ok(())
        }
        UserCmd::ChangePassword { username, password_stdin, random_password, expiry_days, must_change } => {
            let id = user_id_of(a, &username).await?;
            let (password, generated) = password_source(password_stdin, random_password, out)?;
            let uid = sso_core::ids::UserId::parse(&id).ok_or_else(|| Failure::Internal("bad user id".into()))?;
            a.sso.user().set_password(&a.ctx, &uid, &password, must_change, expiry_days).await.map_err(rule)?;
            if generated {
                out.result(&format!("password: {}", password.expose()), json!({"password": password.expose()}));
            } else {
                out.result("ok", json!({"status": "ok"}));
            }
            Ok(())
        }
        UserCmd::ResetTotpKey { username, key_stdin, label, qr } => {
            let id = user_id_of(a, &username).await?;
            let key = if key_stdin { Some(sso_core::secret::TotpKeyText::new(read_stdin_line()?)) } else { None };
            let r = a
                .sso
                .user()
                .reset_totp_key_for(&a.ctx, Some(&id), key.as_ref().map(|k| k.expose()), label.as_deref())
                .await
                .map_err(rule)?;
            match r {
                Some(k) => {
                    let uri = k.otpauth_uri();
                    let mut text = format!("totp_key: {}\ntotp_uri: {uri}", k.expose_base32());
                    if qr {
                        text.push('\n');
                        text.push_str(&sso_core::service::qr_text(&uri).map_err(rule)?);
                    }
                    out.result(&text, json!({"totp_key": k.expose_base32(), "totp_uri": uri}));
                }
                None => out.result("ok", json!({"status": "ok"})),
            }
            Ok(())
        }
        UserCmd::Import { file, dry_run } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let mut rows = Vec::new();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let row: sso_core::service::ImportRow =
                    serde_json::from_str(line).map_err(|e| Failure::Usage(format!("line {}: {e}", n + 1)))?;
                rows.push(row);
            }
            if dry_run {
                out.result(&format!("{} rows parsed; nothing written", rows.len()), json!({"rows": rows.len()}));
                return Ok(());
            }
            let names: Vec<String> = rows.iter().map(|r| r.username.clone()).collect();
            let outcomes = a.sso.user().import_users(&a.ctx, rows).await.map_err(rule)?;
            let mut imported = 0;
            let mut lines = Vec::new();
            let mut skipped = Vec::new();
            for (name, o) in names.iter().zip(&outcomes) {
                match o {
                    sso_core::service::ImportOutcome::Imported(_) => imported += 1,
                    sso_core::service::ImportOutcome::Skipped(why) => {
                        lines.push(format!("skipped {name}: {why}"));
                        skipped.push(json!({"username": name, "reason": why}));
                    }
                }
            }
            let mut text = format!("imported {imported}, skipped {}", skipped.len());
            for l in lines {
                text.push('\n');
                text.push_str(&l);
            }
            out.result(&text, json!({"imported": imported, "skipped": skipped}));
            Ok(())
        }
        UserCmd::List { username, email, name, approval_status, page, page_size } => {
            let q = SearchCtx {
                username,
                email,
                display_name: name.clone(),
                first_name: name.clone(),
                middle_name: name.clone(),
                last_name: name.clone(),
                name_op: name.as_ref().map(|_| "or".to_owned()),
                is_name_exact: name.as_ref().map(|_| false),
                approval_status,
                cur_page: page,
                page_size,
                ..Default::default()
            };
            let r = a.sso.user().search(&a.ctx, q).await.map_err(rule)?;
            let mut text = format!(
                "{:<32} {:<24} {:<24} {:<16} {:<20} {:<6} {:<5} {:<4}",
                "USER_ID", "USERNAME", "DISPLAY_NAME", "APPROVAL", "SIGN_UP", "LOCKED", "SUPER", "TOTP"
            );
            for u in &r.result {
                if let Some(ad) = &u.admin {
                    text.push_str(&format!(
                        "\n{:<32} {:<24} {:<24} {:<16} {:<20} {:<6} {:<5} {:<4}",
                        ad.user_id.as_str(),
                        u.username,
                        u.display_name.clone().unwrap_or_default(),
                        ad.approval_status.as_str(),
                        ad.sign_up_status.as_str(),
                        ad.is_locked,
                        ad.is_super_user,
                        u.is_totp_enabled
                    ));
                }
            }
            text.push_str(&format!("\n{} of {} (page {}/{})", r.result.len(), r.total, r.cur_page, r.num_pages));
            out.result(&text, serde_json::to_value(&r.result).unwrap_or(Value::Null));
            Ok(())
        }
    }
}

fn record_line(r: &sso_core::audit::AuditRecord) -> String {
    let who = r.target_user_id.as_deref().unwrap_or("-");
    let codes = if r.sub_status.is_empty() { String::new() } else { format!(" {}", r.sub_status.join(",")) };
    format!(
        "{} {} {:<32} {:<8}{codes} actor={} target={who} app={} addr={} cid={}",
        r.ts,
        r.id,
        r.op,
        r.outcome.as_str(),
        r.actor,
        r.current_app,
        r.remote_addr,
        r.cid
    )
}

async fn run_audit(cmd: AuditCmd, cfg: Config, cid: Option<&str>, out: &Out) -> Result<(), Failure> {
    use sso_core::audit::{AuditQuery, Outcome};
    // `--cid` filters `audit query`; the query's own record gets a fresh cid.
    let filter_cid = cid.map(str::to_owned);
    let a = admin(cfg, None).await?;
    let r = async {
        match cmd {
            AuditCmd::Query { user, op, outcome, since, until, limit, before } => {
                let ts = |v: Option<String>, name: &str| -> Result<Option<sso_core::time::Timestamp>, Failure> {
                    v.map(|s| {
                        sso_core::time::Timestamp::parse(&s)
                            .ok_or_else(|| Failure::Usage(format!("--{name}: not a datetime")))
                    })
                    .transpose()
                };
                let user = match user {
                    Some(u) if sso_core::ids::UserId::parse(&u).is_some() => Some(u),
                    Some(name) => Some(user_id_of(&a, &name).await?),
                    None => None,
                };
                let outcome = outcome
                    .map(|o| {
                        Outcome::parse(&o).ok_or_else(|| Failure::Usage("--outcome: success, denied or failure".into()))
                    })
                    .transpose()?;
                let q = AuditQuery {
                    cid: filter_cid,
                    user_id: user,
                    op,
                    outcome,
                    since: ts(since, "since")?,
                    until: ts(until, "until")?,
                    limit,
                    before,
                };
                let page = a.sso.audit().query(&a.ctx, q).await.map_err(rule)?;
                let mut text: Vec<String> = page.records.iter().map(record_line).collect();
                if let Some(n) = &page.next_before {
                    text.push(format!("next: {n}"));
                }
                out.result(&text.join("\n"), serde_json::to_value(&page).unwrap_or(Value::Null));
                Ok(())
            }
            AuditCmd::Tail { n, follow } => {
                let q = AuditQuery { limit: n.clamp(1, 1000), ..Default::default() };
                let page = a.sso.audit().query(&a.ctx, q).await.map_err(rule)?;
                let mut last = page.records.first().map(|r| r.id.clone());
                for r in page.records.iter().rev() {
                    print_record(out, r);
                }
                if !follow {
                    return Ok(());
                }
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let q = AuditQuery { limit: 1000, ..Default::default() };
                    let page = a.sso.audit().query(&a.ctx, q).await.map_err(rule)?;
                    let fresh: Vec<_> =
                        page.records.iter().filter(|r| last.as_ref().is_none_or(|l| &r.id > l)).collect();
                    for r in fresh.iter().rev() {
                        print_record(out, r);
                    }
                    if let Some(r) = fresh.first() {
                        last = Some(r.id.clone());
                    }
                }
            }
        }
    }
    .await;
    a.stores.close().await;
    r
}

fn print_record(out: &Out, r: &sso_core::audit::AuditRecord) {
    out.result(&record_line(r), serde_json::to_value(r).unwrap_or(Value::Null));
}

async fn run_session(cmd: SessionCmd, cfg: Config, cid: Option<&str>, out: &Out) -> Result<(), Failure> {
    let a = admin(cfg, cid).await?;
    let r = async {
        match cmd {
            SessionCmd::List { username } => {
                let id = user_id_of(&a, &username).await?;
                let list = a.sso.session().get_list(&a.ctx, ListTarget::User(id)).await.map_err(rule)?;
                let mut text = format!(
                    "{:<30} {:<26} {:<26} {:<16} {:<8} {:<10} USER_AGENT",
                    "SESSION_ID", "CREATED", "EXPIRES", "ADDRESS", "APP", "AUTH"
                );
                for s in &list {
                    let v = &s.view;
                    text.push_str(&format!(
                        "\n{:<30} {:<26} {:<26} {:<16} {:<8} {:<10} {}",
                        v.session_id.as_str(),
                        v.creation_time.to_zato(),
                        v.expiration_time.to_zato(),
                        v.remote_addr,
                        v.current_app,
                        v.auth_type,
                        v.user_agent.clone().unwrap_or_default()
                    ));
                }
                out.result(&text, serde_json::to_value(&list).unwrap_or(Value::Null));
                Ok(())
            }
            SessionCmd::Revoke { session_id, user } => {
                let n = match (session_id, user) {
                    (Some(sid), None) => {
                        a.sso.session().revoke(&a.ctx, &sid).await.map_err(rule)?;
                        1
                    }
                    (None, Some(u)) => {
                        let id = user_id_of(&a, &u).await?;
                        a.sso.session().logout_all(&a.ctx, Some(&id), false).await.map_err(rule)?
                    }
                    _ => return Err(Failure::Usage("give a session id or --user".into())),
                };
                out.result(&format!("revoked {n}"), json!({"revoked": n}));
                Ok(())
            }
        }
    }
    .await;
    a.stores.close().await;
    r
}

fn calibrate(target_ms: u64, max_memory_mib: u32, p: u32, out: &Out) -> Result<(), Failure> {
    use sso_core::crypto::password::{HashParams, hash_argon2id};
    let target = std::time::Duration::from_millis(target_ms);
    let max_m = max_memory_mib.saturating_mul(1024).max(19_456);
    let mut best: Option<(HashParams, std::time::Duration)> = None;
    let mut fallback: Option<(HashParams, std::time::Duration)> = None;
    let mut m = 19_456u32;
    while m <= max_m {
        for t in 2..=12u32 {
            let params = HashParams { m_kib: m, t, p };
            let start = std::time::Instant::now();
            if hash_argon2id(b"calibration password", params, &[7u8; 16]).is_none() {
                return Err(Failure::Usage(format!("argon2 refused m={m} t={t} p={p}")));
            }
            let took = start.elapsed();
            out.notice(&format!("m={m} t={t} p={p}: {} ms", took.as_millis()));
            fallback = Some((params, took));
            if took >= target {
                if best.is_none_or(|(_, b)| took < b) {
                    best = Some((params, took));
                }
                break;
            }
        }
        m = m.saturating_mul(2);
    }
    let (params, took) = best.or(fallback).ok_or_else(|| Failure::Internal("nothing measured".into()))?;
    let text = format!(
        "# measured {} ms per hash on this machine\n[password]\nargon2_memory_kib = {}\nargon2_iterations = {}\nargon2_parallelism = {}",
        took.as_millis(),
        params.m_kib,
        params.t,
        params.p
    );
    out.result(
        &text,
        json!({"argon2_memory_kib": params.m_kib, "argon2_iterations": params.t, "argon2_parallelism": params.p, "measured_ms": took.as_millis() as u64}),
    );
    Ok(())
}

fn init_logging(cfg: &Config, quiet: bool) {
    use sso_core::config::{LogFormat, LogLevel};
    use tracing_subscriber::filter::LevelFilter;
    let level = match (quiet, cfg.server.log_level) {
        (true, _) | (_, LogLevel::Error) => LevelFilter::ERROR,
        (_, LogLevel::Warn) => LevelFilter::WARN,
        (_, LogLevel::Info) => LevelFilter::INFO,
        (_, LogLevel::Debug) => LevelFilter::DEBUG,
        (_, LogLevel::Trace) => LevelFilter::TRACE,
    };
    let b = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_ansi(false);
    let _ = match cfg.server.log_format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

async fn dispatch(cli: Cli, out: &Out) -> Result<(), Failure> {
    if let Command::Config(ConfigCmd::Check { defaults: true }) = &cli.command {
        out.result(&crate::config::redacted_toml(&Config::default()), json!(Config::default()));
        return Ok(());
    }
    let (cfg, source) = crate::config::load(cli.config.as_deref()).map_err(Failure::Config)?;
    init_logging(&cfg, cli.quiet || !matches!(cli.command, Command::Serve));
    let cid = cli.cid.as_deref();
    match cli.command {
        Command::Serve => crate::server::serve(cfg).await.map_err(Failure::from),
        Command::Migrate { check } => {
            let stores = wiring::open_stores(&cfg, false).await?;
            let pending = stores.pending_migrations().await?;
            let r = if check {
                if pending.is_empty() {
                    out.result("no pending migrations", json!({"pending": []}));
                    Ok(())
                } else {
                    out.result(&pending.join("\n"), json!({"pending": pending}));
                    Err(Failure::Check(format!("{} pending migrations", pending.len())))
                }
            } else {
                stores.migrate().await?;
                out.result(&format!("applied {}", pending.len()), json!({"applied": pending}));
                Ok(())
            };
            stores.close().await;
            r
        }
        Command::Config(ConfigCmd::Check { .. }) => {
            if let Some(f) = source.file {
                out.notice(&format!("# from {}", f.display()));
            }
            out.result(&crate::config::redacted_toml(&cfg), serde_json::to_value(&cfg).unwrap_or(Value::Null));
            Ok(())
        }
        Command::Keys(cmd) => run_keys(cmd, cfg, cid, out).await,
        Command::Hash(HashCmd::Calibrate { target_ms, max_memory_mib, parallelism }) => {
            calibrate(target_ms, max_memory_mib, parallelism, out)
        }
        Command::User(cmd) => run_user(cmd, cfg, cid, out).await,
        Command::Session(cmd) => run_session(cmd, cfg, cid, out).await,
        Command::Audit(cmd) => run_audit(cmd, cfg, cid, out).await,
    }
}

/// Parses the arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let out = Out { format: cli.output, quiet: cli.quiet };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 5;
        }
    };
    match rt.block_on(dispatch(cli, &out)) {
        Ok(()) => 0,
        Err(f) => {
            out.failure(&f);
            f.code()
        }
    }
}
