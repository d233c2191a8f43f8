//! Logins per second with N = number of cores concurrent clients, in process (memory stores,
//! SQLite) and over HTTP (the real `sso serve`, SQLite), each as a ratio to raw argon2id hashes per
//! second at the same parameters and the same concurrency (the issue's goal: ≥ 0.9). The raw
//! rate is measured before, between and after the login rows; each row's baseline is the mean of
//! the raw runs on either side of it.
//!
//! Realistic cost: the configured defaults (`Config::default().password`: m = 19 456 KiB, t = 2,
//! p = 1) and the hashing cap in effect (`password.hash_max_concurrent = 0`: one hash per core).
//! Throttling stays on; each client logs in as its own user with the right password, so no
//! throttle counter ever blocks a client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::body::Bytes;
use serde_json::json;
use sso_core::config::Config;
use sso_core::crypto::password::{self, HashParams};
use sso_core::crypto::random;
use sso_core::secret::Password;
use sso_core::store::Stores;

use crate::harness::{
    PASSWORD, closed_loop, concurrent_figure, cores, create_user, ms, ratio, scratch, secs, sso_on, user_ctx, warmup,
};
use crate::loadgen::{self, Load};
use crate::server::SsoServer;
use crate::{Figure, Section, figures_json};

/// The `sso.toml` of the HTTP run (plus `[server] listen`).
const HTTP_CONFIG: &str =
    "[store]\nusers = \"sqlite://./sso.db\"\n\n[audit]\nsinks = [\"file\"]\n\n[audit.file]\nfsync = \"never\"\n";

/// Raw argon2id: `n` threads hashing back to back; hashes completed in the window per second.
fn raw_hashes(params: HashParams, n: usize, warm: Duration, window: Duration) -> Result<Figure, String> {
    let salt = random::bytes::<16>().map_err(|e| e.to_string())?;
    let pw = password::normalize(PASSWORD);
    let from = Instant::now() + warm;
    let until = from + window;
    let lat = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let pw = &pw;
                s.spawn(move || {
                    let mut lat = Vec::new();
                    loop {
                        let start = Instant::now();
                        if start >= until {
                            break;
                        }
                        let h = password::hash_argon2id(pw.as_bytes(), params, &salt);
                        let end = Instant::now();
                        if h.is_some() && end >= from && end <= until {
                            lat.push(end - start);
                        }
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect::<Vec<_>>()
    });
    Ok(concurrent_figure(format!("raw argon2id, {n} threads"), lat, window))
}

/// `n` clients, each logging in as its own user back to back, in process.
async fn in_process(label: &str, stores: Stores, n: usize, warm: Duration, window: Duration) -> Result<Figure, String> {
    let sso = Arc::new(
        sso_on(stores, None, |c| {
            let d = Config::default().password;
            c.password.allow_weak_hash_params = false;
            c.password.argon2_memory_kib = d.argon2_memory_kib;
            c.password.argon2_iterations = d.argon2_iterations;
            c.password.argon2_parallelism = d.argon2_parallelism;
        })
        .await?,
    );
    for i in 0..n {
        create_user(&sso, &format!("login{i}")).await?;
    }
    closed_loop(label, n, warm, window, move |i| {
        let sso = sso.clone();
        async move {
            let name = format!("login{i}");
            sso.user()
                .login(&user_ctx(), &name, &Password::new(PASSWORD), None, None)
                .await
                .map(|_| ())
                .map_err(|e| format!("login {name}: {e}"))
        }
    })
    .await
}

/// `n` HTTP connections to the real `sso serve` (SQLite), each logging in as its own user.
async fn over_http(n: usize, warm: Duration, window: Duration) -> Result<(Figure, u64, String), String> {
    let dir = scratch("login-http")?;
    let port = SsoServer::configure(&dir, HTTP_CONFIG)?;
    let users: Vec<String> = (0..n).map(|i| format!("login{i}")).collect();
    SsoServer::create_users(&dir, &users)?;
    let server = SsoServer::start(&dir, port).await?;
    server.login("login0").await?;
    let load = Load {
        addr: server.addr,
        method: Method::POST,
        path: "/zato/sso/user/login".into(),
        bodies: users
            .iter()
            .map(|u| Bytes::from(json!({"username": u, "password": PASSWORD, "current_app": "CRM"}).to_string()))
            .collect(),
        conns: n,
        warmup: warm,
        window,
    };
    let out = loadgen::run(&load).await?;
    if out.lat.is_empty() {
        return Err(format!("no successful login over HTTP: {}", server.stderr()));
    }
    drop(server);
    Ok((out.figure("HTTP POST /zato/sso/user/login (sso serve, SQLite)"), out.errors, load.describe()))
}

/// Runs the login benchmark.
pub async fn run() -> Result<Vec<Section>, String> {
    let n = cores();
    let (warm, window) = (warmup(), secs());
    let params = Config::default().password.hash_params();
    // Raw argon2id is measured between the login rows (raw, memory, raw, SQLite, raw, HTTP, raw)
    // and each row is compared with the mean of the two raw runs around it: this machine's speed
    // drifts by up to ±20 % over a minute, and a baseline right beside the row cancels most of it.
    let mut raws = vec![raw_hashes(params, n, warm, window)?];
    let mem = in_process("in process, memory stores", sso_core::memory::stores(), n, warm, window).await?;
    raws.push(raw_hashes(params, n, warm, window)?);
    let dir = scratch("login")?;
    let sqlite = sso_store_sqlite::SqliteStore::open(
        &format!("sqlite://{}", dir.join("login.db").display()),
        &sso_store_sqlite::SqliteOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    sqlite.migrate().await.map_err(|e| e.to_string())?;
    let sql = in_process("in process, SQLite", sqlite.stores(), n, warm, window).await?;
    sqlite.close().await;
    raws.push(raw_hashes(params, n, warm, window)?);
    let (http, http_errors, load) = over_http(n, warm, window).await?;
    raws.push(raw_hashes(params, n, warm, window)?);
    let raw_rate = |i: usize| raws.get(i).map_or(0.0, |f| f.ops_per_s);
    let around = |i: usize| (raw_rate(i) + raw_rate(i + 1)) / 2.0;
    let raw_list = raws.iter().map(|f| format!("{:.1}", f.ops_per_s)).collect::<Vec<_>>().join(", ");

    let mut md = format!(
        "{n} concurrent clients (= cores), each logging in as its own user with the right password, back\n\
         to back, {:.1} s warm-up + {:.0} s timed per row. argon2id m = {} KiB, t = {}, p = {} (the defaults),\n\
         `password.hash_max_concurrent = 0` (one hash per core) in effect; throttling on (no client ever\n\
         fails, so no counter blocks). Baseline: raw argon2id hashes/s, {n} threads, same parameters,\n\
         measured before, between and after the login rows of this run ({raw_list} hashes/s); each row's\n\
         baseline is the mean of the raw runs just before and just after it.\n\
         Goal: ratio ≥ 0.9. In process: no audit sink. Over HTTP: `target/release/sso serve` with\n\
         (plus `[server] listen` on a free loopback port; users created with `sso user create <name> --password-stdin`):\n\n\
         ```toml\n{HTTP_CONFIG}```\n\nLoad: {load}.\n\n\
         | path | logins/s | p50 ms | p99 ms | raw argon2id hashes/s (runs around it) | ratio |\n|---|---|---|---|---|---|\n",
        warm.as_secs_f64(),
        window.as_secs_f64(),
        params.m_kib,
        params.t,
        params.p,
    );
    let mut js = Vec::new();
    for (i, f) in [&mem, &sql, &http].into_iter().enumerate() {
        let base = around(i);
        let r = ratio(f.ops_per_s, base);
        md.push_str(&format!(
            "| {} | {:.1} | {} | {} | {base:.1} | {r:.2} |\n",
            f.name,
            f.ops_per_s,
            ms(f.p50),
            ms(f.p99)
        ));
        js.push(
            json!({"name": f.name, "logins_per_s": f.ops_per_s, "raw_hashes_per_s": base, "ratio_to_raw_hashes": r}),
        );
    }
    if http_errors > 0 {
        md.push_str(&format!("\nHTTP: {http_errors} failed requests in the window (not counted).\n"));
    }
    Ok(vec![Section {
        title: "Logins per second vs raw argon2id".into(),
        markdown: md,
        json: json!({
            "clients": n,
            "raw_hashes_per_s": raws.iter().map(|f| f.ops_per_s).collect::<Vec<_>>(),
            "rows": js,
            "figures": figures_json(&[raws.clone(), vec![mem, sql, http]].concat()),
        }),
    }])
}
