//! # sso-testkit
//!
//! Real servers for tests, started on 127.0.0.1 and a free port, torn down on drop: a throwaway
//! PostgreSQL cluster in a temporary directory (`initdb` as the unprivileged `postgres` user when
//! running as root, fsync off) and Redis (`redis-server`, no persistence; also a 3-master cluster).
//! Missing binaries are installed with `apt-get` when running as root; otherwise the error names the
//! exact command to run. Standard library only: `cargo xtask ci` uses it too.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().next() == Some("0"))))
        .unwrap_or(false)
}

/// A free loopback port.
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn temp_dir(kind: &str) -> Result<PathBuf, String> {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("sso-{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn apt_install(package: &str) -> Result<(), String> {
    if !is_root() || Command::new("apt-get").arg("--version").stdout(Stdio::null()).status().is_err() {
        return Err(format!(
            "{package} is not installed; run: sudo apt-get install -y --no-install-recommends {package}"
        ));
    }
    eprintln!("testkit: installing {package} with apt-get");
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    if run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", package]).envs(env)).is_err() {
        run(Command::new("apt-get").arg("update").envs(env))?;
        run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", package]).envs(env))?;
    }
    Ok(())
}

fn wait_tcp(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after {timeout:?}"))
}

// ----- PostgreSQL ---------------------------------------------------------------------------------

fn pg_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop()
}

/// A throwaway PostgreSQL cluster.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    running: bool,
    durable: bool,
}

impl PgServer {
    fn cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Installs (if needed and allowed), initialises and starts a fast cluster (fsync and
    /// synchronous commit off: a crash may lose the last commits).
    pub fn start() -> Result<PgServer, String> {
        Self::start_with(false)
    }

    /// As [`PgServer::start`], with synchronous commit on so that an immediate stop (a crash of the
    /// server process) loses no committed transaction.
    pub fn start_durable() -> Result<PgServer, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<PgServer, String> {
        let bin = match pg_bin_dir() {
            Some(b) => b,
            None => {
                apt_install("postgresql")?;
                pg_bin_dir().ok_or("PostgreSQL binaries not found under /usr/lib/postgresql after installing")?
            }
        };
        let dir = temp_dir("pg")?;
        if is_root() {
            if run(Command::new("id").arg("postgres")).is_err() {
                run(Command::new("useradd").args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "postgres",
                ]))?;
            }
            run(Command::new("chown").arg("postgres:").arg(&dir))?;
        }
        let mut pg = PgServer { bin, dir, port: free_port()?, running: false, durable };
        let data = pg.dir.join("data");
        run(pg.cmd("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))?;
        pg.start_again()?;
        Ok(pg)
    }

    /// Starts the (stopped) server again on the same directory and port.
    pub fn start_again(&mut self) -> Result<(), String> {
        let data = self.dir.join("data");
        let commit = if self.durable { "on" } else { "off" };
        let opts = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c synchronous_commit={commit} -c full_page_writes=off \
             -c max_connections=500 -c shared_buffers=128MB -c max_wal_size=64MB -c min_wal_size=32MB",
            self.port,
            self.dir.display()
        );
        run(self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]))?;
        self.running = true;
        wait_tcp(self.port, Duration::from_secs(10))
    }

    /// `pg_ctl stop -m immediate`: the server dies without a clean shutdown.
    pub fn stop_immediate(&mut self) -> Result<(), String> {
        run(self.cmd("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]))?;
        self.running = false;
        Ok(())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` (user `postgres`, trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database.
    pub fn create_db(&self, db: &str) -> Result<(), String> {
        run(self.cmd("createdb").args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", db]))?;
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ =
                run(self.cmd("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the process `pid` (its decimal id) has ended: `false` for anything but a number, and
/// wherever `/proc` cannot tell (not Linux), so that nothing of a live process is removed.
fn has_ended(pid: &str) -> bool {
    !pid.is_empty()
        && pid.chars().all(|c| c.is_ascii_digit())
        && Path::new("/proc/self").exists()
        && !Path::new("/proc").join(pid).exists()
}

/// This process's own scratch folder, `<tmp>/<root>/<pid>`, for test files that outlive the
/// function that made them (a store the conformance suite holds past its opener). Creating it
/// first removes the folders under `<root>` of processes that have ended, so a run of many test
/// processes keeps only the live ones'. Call it once per process.
pub fn process_scratch_dir(root: &str) -> Result<PathBuf, String> {
    let root = std::env::temp_dir().join(root);
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if has_ended(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Drops the test databases of processes that have ended, best effort.
///
/// A test database is named `<prefix><pid>_…` after the process that creates it, and each is a
/// copy of `template1` (≈ 7.5 MB): a run of a few hundred tests, one database each, would
/// otherwise fill the disk until the server is torn down. A process calls this once, before its
/// first database; names of processes still alive (`/proc/<pid>`, so Linux only) and any error
/// (another process dropping the same database, no `psql`) are passed over.
pub fn drop_ended_databases(admin_url: &str, prefix: &str) {
    let psql = pg_bin_dir().map_or_else(|| PathBuf::from("psql"), |b| b.join("psql"));
    let list = "SELECT datname FROM pg_database";
    let Ok(names) = run(Command::new(&psql).args(["-w", "-X", "-A", "-t", "-q", admin_url, "-c", list])) else {
        return;
    };
    let ended: Vec<String> = names
        .lines()
        .filter(|name| {
            let pid = name.strip_prefix(prefix).and_then(|rest| rest.split('_').next()).unwrap_or_default();
            has_ended(pid) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|name| format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .collect();
    if ended.is_empty() {
        return;
    }
    // One `-c` per statement: DROP DATABASE may not run inside the transaction a
    // multi-statement `-c` would be.
    let mut cmd = Command::new(&psql);
    cmd.args(["-w", "-X", "-q", admin_url]);
    for drop in &ended {
        cmd.args(["-c", drop]);
    }
    let _ = run(&mut cmd);
}

// ----- Redis -------------------------------------------------------------------------------------------

fn redis_bin() -> Result<PathBuf, String> {
    let find =
        || ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].iter().map(PathBuf::from).find(|p| p.exists());
    match find() {
        Some(p) => Ok(p),
        None => {
            apt_install("redis-server")?;
            find().ok_or_else(|| "redis-server not found after installing".to_owned())
        }
    }
}

fn redis_cli() -> PathBuf {
    ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

/// One `redis-server` process (optionally a cluster node).
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    cluster_port: Option<u16>,
    running: bool,
}

impl RedisServer {
    /// Starts a stand-alone server (no persistence).
    pub fn start() -> Result<RedisServer, String> {
        Self::start_node(false)
    }

    fn start_node(cluster: bool) -> Result<RedisServer, String> {
        let dir = temp_dir("redis")?;
        let mut s = RedisServer {
            dir,
            port: free_port()?,
            cluster_port: if cluster { Some(free_port()?) } else { None },
            running: false,
        };
        s.start_again()?;
        Ok(s)
    }

    /// Starts the (stopped) server again on the same port.
    pub fn start_again(&mut self) -> Result<(), String> {
        let bin = redis_bin()?;
        let mut c = Command::new(bin);
        c.args(["--daemonize", "yes", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if let Some(cp) = self.cluster_port {
            c.args(["--cluster-enabled", "yes", "--cluster-port", &cp.to_string(), "--cluster-config-file"])
                .arg(self.dir.join("nodes.conf"))
                .args(["--cluster-node-timeout", "2000"]);
        }
        run(&mut c)?;
        self.running = true;
        wait_tcp(self.port, Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while run(Command::new(redis_cli()).args(["-p", &self.port.to_string(), "ping"])).map(|o| o.trim() == "PONG")
            != Ok(true)
        {
            if Instant::now() > deadline {
                return Err("redis does not answer PING".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server without saving.
    pub fn stop(&mut self) -> Result<(), String> {
        let r = run(Command::new(redis_cli()).args(["-p", &self.port.to_string(), "shutdown", "nosave"]));
        self.running = false;
        // `shutdown` closes the connection before answering; wait for the port to close instead.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                return Err(format!("redis on {} does not stop: {r:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(redis_cli()).args(["-p", &self.port.to_string()]).args(args))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-master Redis Cluster on loopback.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits for `cluster_state:ok`.
    pub fn start() -> Result<RedisCluster, String> {
        let nodes =
            vec![RedisServer::start_node(true)?, RedisServer::start_node(true)?, RedisServer::start_node(true)?];
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut c = Command::new(redis_cli());
        c.arg("--cluster").arg("create").args(&addrs).args(["--cluster-replicas", "0", "--cluster-yes"]);
        run(&mut c)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = nodes
                .iter()
                .all(|n| n.cli(&["cluster", "info"]).map(|s| s.contains("cluster_state:ok")).unwrap_or(false));
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err("the cluster did not reach cluster_state:ok".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(RedisCluster { nodes })
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}
