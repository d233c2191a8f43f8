//! The end-to-end harness: the real `sso` binary on a free loopback port, in a temporary working
//! directory (its `./sso.toml`, `./sso.db`, key ring and audit file), driven over HTTP.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";
pub const BIN: &str = env!("CARGO_BIN_EXE_sso");

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Which stores an end-to-end run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded default: SQLite in the working directory.
    Sqlite,
    /// Everything in a fresh PostgreSQL database (`DATABASE_URL` names the server).
    Postgres,
    /// Users in PostgreSQL; sessions and counters in Redis (`REDIS_URL`) under a fresh prefix.
    Mixed,
}

fn require(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI_REQUIRE_SERVICES").is_some() => panic!("{var} is not set but CI_REQUIRE_SERVICES is"),
        _ => {
            eprintln!("skipped: {var} is not set (cargo xtask ci sets it)");
            None
        }
    }
}

/// A fresh database named after this process; the first call of a process drops those of ended
/// processes (`sso_testkit::drop_ended_databases`).
async fn e2e_database(admin: &str) -> String {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sso_testkit::drop_ended_databases(admin, "sso_e2e_"));
    let name = format!("sso_e2e_{}_{}", std::process::id(), sso_core::ids::Cid::generate());
    sso_store_postgres::PgStore::create_database(admin, &name).await.unwrap()
}

/// The `[store]` section for `store`, or `None` when its server is not available (skip).
pub async fn store_toml(store: Store) -> Option<String> {
    match store {
        Store::Sqlite => Some("[store]\nusers = \"sqlite://./sso.db\"\n".into()),
        Store::Postgres => {
            let admin = require("DATABASE_URL")?;
            let url = e2e_database(&admin).await;
            Some(format!("[store]\nusers = {url:?}\n"))
        }
        Store::Mixed => {
            let admin = require("DATABASE_URL")?;
            let redis = require("REDIS_URL")?;
            let url = e2e_database(&admin).await;
            let prefix = format!("e2e{}:", sso_core::ids::Cid::generate());
            Some(format!("[store]\nusers = {url:?}\nsessions = {redis:?}\nredis_prefix = {prefix:?}\n"))
        }
    }
}

/// A second node of the deployment in `dir`: its own directory and port, the same configuration
/// (stores, key ring) otherwise.
pub async fn second_node(dir: &Path) -> (tempfile::TempDir, Server) {
    let d2 = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg: toml::Table = std::fs::read_to_string(dir.join("sso.toml")).unwrap().parse().unwrap();
    if let Some(toml::Value::Table(server)) = cfg.get_mut("server") {
        server.insert("listen".into(), toml::Value::String(format!("127.0.0.1:{port}")));
    }
    std::fs::write(d2.path().join("sso.toml"), toml::to_string(&cfg).unwrap()).unwrap();
    std::fs::copy(dir.join("sso-keys.toml"), d2.path().join("sso-keys.toml")).unwrap();
    let s = Server::start(d2.path(), port).await;
    (d2, s)
}

fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Writes the test configuration: fast (weak) hashing, the test webhook, and `extra` (TOML)
/// merged over it.
pub fn write_config(dir: &Path, port: u16, hook_port: u16, store: &str, extra: &str) {
    let text = format!(
        "{store}\n[server]\nlisten = \"127.0.0.1:{port}\"\ncleanup_interval_s = 0\n\n\
         [password]\nallow_weak_hash_params = true\nargon2_memory_kib = 64\nargon2_iterations = 1\n\n\
         [audit]\nsinks = [\"file\", \"sql\"]\n\n\
         [notify]\nwebhook_url = \"http://127.0.0.1:{hook_port}/hook\"\nwebhook_secret = \"hook-secret\"\nretries = 0\n",
    );
    let mut base: toml::Table = text.parse().unwrap();
    merge(&mut base, extra.parse().unwrap());
    std::fs::write(dir.join("sso.toml"), toml::to_string(&base).unwrap()).unwrap();
}

/// Collected webhook bodies.
#[derive(Clone, Default)]
pub struct Hooks(pub Arc<Mutex<Vec<Value>>>);

impl Hooks {
    /// Starts a receiver on a free port.
    pub async fn start() -> (Hooks, u16) {
        let hooks = Hooks::default();
        let h = hooks.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let h = h.clone();
                async move {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        h.0.lock().unwrap().push(v);
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (hooks, port)
    }

    /// Waits for an event of `kind` for `username`.
    pub async fn wait(&self, kind: &str, username: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) =
                self.0.lock().unwrap().iter().find(|v| v["event"] == kind && v["username"] == username).cloned()
            {
                return v;
            }
            assert!(Instant::now() < deadline, "no {kind} event for {username}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running server.
pub struct Server {
    pub _dir: PathBuf,
    pub port: u16,
    pub child: Option<Child>,
    pub client: reqwest::Client,
}

/// A response: status, body, headers.
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn code(&self) -> String {
        self.body["sub_status"][0].as_str().unwrap_or("").to_owned()
    }

    pub fn s(&self, k: &str) -> String {
        self.body[k].as_str().unwrap_or_else(|| panic!("no string {k} in {}", self.body)).to_owned()
    }
}

impl Server {
    /// Starts `sso serve` in `dir` (which holds `sso.toml`).
    pub async fn start(dir: &Path, port: u16) -> Server {
        let child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.err")).unwrap())
            .spawn()
            .unwrap();
        let s = Server { _dir: dir.to_owned(), port, child: Some(child), client: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = s.client.get(format!("http://127.0.0.1:{port}/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                std::fs::read_to_string(dir.join("serve.err")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().unwrap()
    }

    /// A raw request.
    pub async fn raw(&self, method: Method, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self.client.request(method, format!("http://127.0.0.1:{}{path}", self.port)).body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, body, headers }
    }

    /// A JSON request under `/zato/sso` with `current_app = CRM` added.
    pub async fn call(&self, method: Method, path: &str, mut body: Value) -> Resp {
        if let Value::Object(m) = &mut body {
            m.entry("current_app").or_insert(json!("CRM"));
        }
        self.raw(method, &format!("/zato/sso{path}"), serde_json::to_vec(&body).unwrap(), &[]).await
    }

    /// Logs in; returns the response.
    pub async fn login(&self, username: &str, password: &str, code: Option<&str>) -> Resp {
        let mut b = json!({"username": username, "password": password});
        if let Some(c) = code {
            b["totp_code"] = json!(c);
        }
        self.call(Method::POST, "/user/login", b).await
    }

    /// Logs in and returns the UST (panics otherwise).
    pub async fn ust(&self, username: &str, password: &str) -> String {
        let r = self.login(username, password, None).await;
        assert_eq!(r.status, 200, "login {username}: {}", r.body);
        r.s("ust")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the CLI in `dir`.
pub fn cli(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The current TOTP code of a base32 key (the server uses the real clock).
pub fn code(key_b32: &str, offset: i64) -> String {
    let key = sso_core::secret::TotpKey::parse(key_b32).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let step = sso_core::crypto::totp::step_of(now).saturating_add_signed(offset);
    sso_core::crypto::totp::code_for_step(key.expose_bytes(), step).to_string()
}

/// A fresh server directory on `store` with a super-user `admin` created by the CLI. Returns the
/// directory, the super-user's id, the server and the webhook receiver; `None` when the store's
/// server is not available outside CI (the skip is announced).
pub async fn fresh_on(store: Store, extra_config: &str) -> Option<(tempfile::TempDir, String, Server, Hooks)> {
    let store = store_toml(store).await?;
    let dir = tempfile::tempdir().unwrap();
    let (hooks, hook_port) = Hooks::start().await;
    let port = free_port();
    write_config(dir.path(), port, hook_port, &store, extra_config);
    let out = cli(
        dir.path(),
        &["--output", "json", "user", "create-super-user", "admin", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "create-super-user: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let admin_id = doc["user_id"].as_str().unwrap().to_owned();
    let server = Server::start(dir.path(), port).await;
    Some((dir, admin_id, server, hooks))
}

/// [`fresh_on`] the embedded default.
pub async fn fresh(extra_config: &str) -> (tempfile::TempDir, String, Server, Hooks) {
    match fresh_on(Store::Sqlite, extra_config).await {
        Some(x) => x,
        None => unreachable!("SQLite needs no server"),
    }
}

/// Every byte of every file in `dir` (audit files, logs, the SQLite database and its WAL), lossy.
pub fn dir_text(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                out.push_str(&String::from_utf8_lossy(&bytes));
                out.push('\n');
            }
        }
    }
    out
}
