//! The servers the HTTP groups load: the real `sso serve` binary (`target/release/sso`, next to
//! `sso-bench`) started in a scratch directory with its own `sso.toml`, and the trivial axum
//! handler of the baseline (same axum 0.8 / hyper 1 HTTP/1.1 stack, its own multi-thread tokio
//! runtime with one worker per core, like `sso serve`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, rss_kib};
use crate::loadgen;

/// The `sso` binary next to this one.
pub fn sso_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.parent().ok_or("no parent directory of sso-bench")?.join("sso");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release -p sso-http` (cargo xtask bench does)",
            bin.display()
        ))
    }
}

/// A command running the `sso` binary in `dir`, without this process's `SSO_*` variables (the
/// benchmark's own `SSO_BENCH_*` would be read as configuration keys and refused).
fn sso_command(dir: &Path) -> Result<Command, String> {
    let mut c = Command::new(sso_binary()?);
    c.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SSO_") {
            c.env_remove(k);
        }
    }
    Ok(c)
}

/// Runs the CLI in `dir` (which holds `sso.toml`), `stdin` fed to it.
pub fn cli(dir: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = sso_command(dir)?
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("sso {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// A running `sso serve`, killed on drop.
pub struct SsoServer {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl SsoServer {
    /// Writes `dir/sso.toml`: `config` (TOML without `[server]`) plus `[server] listen` on a free
    /// loopback port; returns the port.
    pub fn configure(dir: &Path, config: &str) -> Result<u16, String> {
        let port = sso_testkit::free_port()?;
        let text = format!("{config}\n[server]\nlisten = \"127.0.0.1:{port}\"\n");
        std::fs::write(dir.join("sso.toml"), text).map_err(|e| e.to_string())?;
        Ok(port)
    }

    /// Creates regular users `names` (approved, password [`PASSWORD`]) with the CLI.
    pub fn create_users(dir: &Path, names: &[String]) -> Result<(), String> {
        for n in names {
            cli(dir, &["user", "create", n, "--password-stdin"], &format!("{PASSWORD}\n"))?;
        }
        Ok(())
    }

    /// Starts `sso serve` in `dir` on `port` and waits for `/health` (30 s at most).
    pub async fn start(dir: &Path, port: u16) -> Result<SsoServer, String> {
        let err = std::fs::File::create(dir.join("serve.err")).map_err(|e| e.to_string())?;
        let child = sso_command(dir)?
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = SsoServer { child, addr, dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = loadgen::once(addr, Method::GET, "/health", "").await {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "sso serve did not start: {}",
                    std::fs::read_to_string(dir.join("serve.err")).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's resident set size (KiB).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.child.id())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Logs in over HTTP; returns the UST.
    pub async fn login(&self, username: &str) -> Result<String, String> {
        login(self.addr, username).await
    }

    /// The server's standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.err")).unwrap_or_default()
    }
}

impl Drop for SsoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs `username` in (password [`PASSWORD`]) at `addr`; returns the UST.
pub async fn login(addr: SocketAddr, username: &str) -> Result<String, String> {
    let body = json!({"username": username, "password": PASSWORD, "current_app": "CRM"}).to_string();
    let (status, text) = loadgen::once(addr, Method::POST, "/zato/sso/user/login", &body).await?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("login {username}: {e}: {text}"))?;
    match (status, v.get("ust").and_then(Value::as_str)) {
        (200, Some(u)) => Ok(u.to_owned()),
        _ => Err(format!("login {username}: {status} {text}")),
    }
}

/// The trivial-handler baseline server, stopped on drop.
pub struct Trivial {
    /// Its address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The body the trivial handler answers with (the shape of a verify reply).
pub const TRIVIAL_REPLY: &str = r#"{"status":"ok","sub_status":[],"cid":"00000000000000000000000000","is_valid":true}"#;

/// Starts the trivial handler on `path` (any method; reads the request body, answers
/// [`TRIVIAL_REPLY`]) on a free loopback port, in its own runtime with `workers` threads.
pub fn trivial(path: &str, workers: usize) -> Result<Trivial, String> {
    use axum::routing::any;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().route(
        path,
        any(|_body: axum::body::Bytes| async {
            ([(axum::http::header::CONTENT_TYPE, "application/json")], TRIVIAL_REPLY)
        }),
    );
    std::thread::Builder::new()
        .name(crate::cpu::TRIVIAL_THREAD.into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .thread_name(crate::cpu::TRIVIAL_THREAD)
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(l) = tokio::net::TcpListener::from_std(listener) else { return };
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(Trivial { addr, stop: Some(stop) })
}

impl Drop for Trivial {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
