//! `reset_totp_key` throughput and latency in process on each store (memory, SQLite, PostgreSQL,
//! Redis sessions + PostgreSQL users), beside the same-run throughput of a single-row `UPDATE` on
//! the same database with the same number of clients (for the memory store: its own
//! `begin` / `update_totp` / `commit`). And the write amplification on PostgreSQL: statements per
//! call from `pg_stat_statements` (enabled on the test server with `ALTER SYSTEM` and a restart),
//! transactions and tuples per call from `pg_stat_database` deltas.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sso_core::Sso;
use sso_core::ids::{Cid, UserId};
use sso_core::store::Stores;

use crate::harness::{closed_loop, create_user, ratio, scratch, secs, sso_on, us, warmup};
use crate::{Figure, Section, figures_json};

const CLIENTS: usize = 4;
/// Calls of the fixed-count phase that measures the write amplification.
const AMP_CALLS: usize = 1000;

/// Runs `op(client)` from `CLIENTS` tasks back to back: warm-up, then the timed window.
async fn timed<F, Fut>(name: &str, op: F) -> Result<Figure, String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    closed_loop(name, CLIENTS, warmup(), secs(), op).await
}

/// `CLIENTS` users (`reset0`…) on `sso`.
async fn users(sso: &Sso) -> Result<Arc<Vec<UserId>>, String> {
    let mut v = Vec::new();
    for i in 0..CLIENTS {
        v.push(create_user(sso, &format!("reset{i}")).await?);
    }
    Ok(Arc::new(v))
}

/// `reset_totp_key` by an Operator on client `c`'s own user (generated key, default label).
async fn reset_once(sso: &Sso, users: &[UserId], c: usize) -> Result<(), String> {
    let op = sso.operator_ctx(Cid::generate(), "bench");
    let id = users.get(c).ok_or("no user")?;
    sso.user().reset_totp_key(&op, Some(id), None, None).await.map_err(|e| format!("reset_totp_key: {e}"))?;
    Ok(())
}

async fn resets(label: &str, sso: Arc<Sso>, users: Arc<Vec<UserId>>) -> Result<Figure, String> {
    timed(label, move |c| {
        let (sso, users) = (sso.clone(), users.clone());
        async move { reset_once(&sso, &users, c).await }
    })
    .await
}

/// `count` calls spread over `CLIENTS` tasks.
async fn fixed_calls(sso: Arc<Sso>, users: Arc<Vec<UserId>>, count: usize) -> Result<(), String> {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (sso, users) = (sso.clone(), users.clone());
        let n = count / CLIENTS + usize::from(c < count % CLIENTS);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                reset_once(&sso, &users, c).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

const BASE_TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_row (id INTEGER PRIMARY KEY, v BIGINT NOT NULL)";

async fn pg_baseline(pool: sqlx::PgPool) -> Result<Figure, String> {
    sqlx::query(BASE_TABLE).execute(&pool).await.map_err(|e| e.to_string())?;
    for c in 0..CLIENTS {
        sqlx::query("INSERT INTO bench_row (id, v) VALUES ($1, 0) ON CONFLICT (id) DO NOTHING")
            .bind(i32::try_from(c).unwrap_or(0))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
    }
    timed("single-row UPDATE (same database)", move |c| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE bench_row SET v = v + 1 WHERE id = $1")
                .bind(i32::try_from(c).unwrap_or(0))
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

async fn sqlite_baseline(pool: sqlx::SqlitePool) -> Result<Figure, String> {
    sqlx::query(BASE_TABLE).execute(&pool).await.map_err(|e| e.to_string())?;
    for c in 0..CLIENTS {
        sqlx::query("INSERT OR IGNORE INTO bench_row (id, v) VALUES (?, 0)")
            .bind(i64::try_from(c).unwrap_or(0))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
    }
    timed("single-row UPDATE (same database)", move |c| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE bench_row SET v = v + 1 WHERE id = ?")
                .bind(i64::try_from(c).unwrap_or(0))
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// The memory store's own transaction: `begin`, `update_totp` (with the epoch bump), `commit`.
async fn memory_baseline(stores: Stores, users: Arc<Vec<UserId>>) -> Result<Figure, String> {
    timed("memory UserTx: begin + update_totp + commit", move |c| {
        let (stores, users) = (stores.clone(), users.clone());
        async move {
            let id = users.get(c).ok_or("no user")?;
            let mut tx = stores.users.begin().await.map_err(|e| e.to_string())?;
            tx.update_totp(id, "enc1.k.key", "enc1.k.label", true).await.map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())
        }
    })
    .await
}

/// Statements (from pg_stat_statements) and database counters of one fixed-count phase.
struct Amplification {
    store: String,
    calls: usize,
    statements: Option<Vec<(String, i64, i64)>>,
    db_delta: [i64; 5],
}

const DB_STATS: &str = "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()";

async fn db_stats(pool: &sqlx::PgPool) -> Result<[i64; 5], String> {
    let r: (i64, i64, i64, i64, i64) = sqlx::query_as(DB_STATS).fetch_one(pool).await.map_err(|e| e.to_string())?;
    Ok([r.0, r.1, r.2, r.3, r.4])
}

/// One database of the PostgreSQL server: the timed runs, then the fixed-count phase on a fresh
/// pool that is closed before the counters are read (a backend flushes its statistics on exit).
async fn pg_store(
    label: &str,
    admin_url: &str,
    db: &str,
    redis: Option<&str>,
    pss: bool,
) -> Result<(Figure, Figure, Amplification), String> {
    let url = sso_store_postgres::PgStore::create_database(admin_url, db).await.map_err(|e| e.to_string())?;
    let open = || async {
        let s = sso_store_postgres::PgStore::open(&url, &Default::default()).await.map_err(|e| e.to_string())?;
        let mut stores = s.stores();
        if let Some(r) = redis {
            let opts = sso_store_redis::RedisOptions { prefix: format!("{db}:"), ..Default::default() };
            sso_store_redis::RedisStore::open(r, opts).await.map_err(|e| e.to_string())?.apply(&mut stores);
        }
        Ok::<_, String>((s, stores))
    };
    let (a, stores) = open().await?;
    a.migrate().await.map_err(|e| e.to_string())?;
    if pss {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(a.pool())
            .await
            .map_err(|e| e.to_string())?;
    }
    let base = pg_baseline(a.pool().clone()).await?;
    let sso = Arc::new(sso_on(stores, None, |_| {}).await?);
    let ids = users(&sso).await?;
    let fig = resets(label, sso.clone(), ids.clone()).await?;
    drop(sso);
    a.close().await;

    let admin =
        sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.map_err(|e| e.to_string())?;
    let (b, stores) = open().await?;
    let sso = Arc::new(sso_on(stores, None, |_| {}).await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if pss {
        sqlx::query("SELECT pg_stat_statements_reset()").execute(&admin).await.map_err(|e| e.to_string())?;
    }
    let s0 = db_stats(&admin).await?;
    fixed_calls(sso.clone(), ids, AMP_CALLS).await?;
    let statements = if pss {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT s.query, s.calls, s.rows FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.query NOT ILIKE '%pg_stat%' ORDER BY s.calls DESC, s.query",
        )
        .fetch_all(&admin)
        .await
        .map_err(|e| e.to_string())?;
        Some(rows)
    } else {
        None
    };
    drop(sso);
    b.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s1 = db_stats(&admin).await?;
    admin.close().await;
    let mut db_delta = [0i64; 5];
    for (d, (x, y)) in db_delta.iter_mut().zip(s1.iter().zip(s0.iter())) {
        *d = x - y;
    }
    Ok((fig, base, Amplification { store: label.to_owned(), calls: AMP_CALLS, statements, db_delta }))
}

/// Turns pg_stat_statements on (ALTER SYSTEM + restart); `false` (and why) when it cannot be.
async fn enable_pss(pg: &mut sso_testkit::PgServer) -> Result<(), String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url("postgres"))
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    pool.close().await;
    pg.stop_immediate()?;
    pg.start_again()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url("postgres"))
        .await
        .map_err(|e| e.to_string())?;
    let loaded: String =
        sqlx::query_scalar("SHOW shared_preload_libraries").fetch_one(&pool).await.map_err(|e| e.to_string())?;
    pool.close().await;
    if loaded.contains("pg_stat_statements") { Ok(()) } else { Err(format!("shared_preload_libraries = {loaded:?}")) }
}

fn cell(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
    if one.chars().count() > 110 { format!("{}…", one.chars().take(110).collect::<String>()) } else { one }
}

/// Runs the benchmark.
#[allow(clippy::too_many_lines)]
pub async fn run() -> Result<Vec<Section>, String> {
    let mut rows: Vec<(String, Figure, Figure)> = Vec::new();

    // memory
    let stores = sso_core::memory::stores();
    let sso = Arc::new(sso_on(stores.clone(), None, |_| {}).await?);
    let ids = users(&sso).await?;
    let base = memory_baseline(stores, ids.clone()).await?;
    let fig = resets("memory", sso, ids).await?;
    rows.push(("memory".into(), fig, base));

    // SQLite
    let dir = scratch("reset")?;
    let sqlite = crate::harness::sqlite_in(&dir, "reset.db").await?;
    let base = sqlite_baseline(sqlite.pool().clone()).await?;
    let sso = Arc::new(sso_on(sqlite.stores(), None, |_| {}).await?);
    let ids = users(&sso).await?;
    let fig = resets("SQLite", sso, ids).await?;
    sqlite.close().await;
    rows.push(("SQLite".into(), fig, base));

    // PostgreSQL, then Redis sessions + PostgreSQL users
    let mut pg = sso_testkit::PgServer::start()?;
    let pss = enable_pss(&mut pg).await;
    let admin = pg.url("postgres");
    let mut amps = Vec::new();
    let (fig, base, amp) = pg_store("PostgreSQL", &admin, "sso_reset_pg", None, pss.is_ok()).await?;
    rows.push(("PostgreSQL".into(), fig, base));
    amps.push(amp);
    let redis = sso_testkit::RedisServer::start()?;
    let label = "Redis sessions + PostgreSQL users";
    let (fig, base, amp) = pg_store(label, &admin, "sso_reset_mixed", Some(&redis.url()), pss.is_ok()).await?;
    rows.push((label.into(), fig, base));
    amps.push(amp);

    // ----- report -----
    let mut md = format!(
        "`sso.user().reset_totp_key(op, Some(user), None, None)` by an Operator (generated key, default label;\n\
         the default `totp.revoke_sessions_on_admin_reset` bumps the epoch in the same UPDATE), {CLIENTS} clients\n\
         in process, each on its own user, back to back, {:.1} s warm-up + {:.0} s timed per row. No audit sink\n\
         (an `sql` sink would add one INSERT per call in the same transaction). Baseline, same run, same\n\
         {CLIENTS} clients: a single-row `UPDATE bench_row SET v = v + 1 WHERE id = $1` (autocommit) on the same\n\
         database; for the memory store, its own `begin` + `update_totp` + `commit`. PostgreSQL runs with\n\
         fsync off (testkit).\n\n\
         | store | resets/s | p50 µs | p99 µs | baseline (same run) | baseline ops/s | baseline p50 µs | ratio (resets/s ÷ baseline) |\n\
         |---|---|---|---|---|---|---|---|\n",
        warmup().as_secs_f64(),
        secs().as_secs_f64()
    );
    let mut js = Vec::new();
    for (store, f, b) in &rows {
        let r = ratio(f.ops_per_s, b.ops_per_s);
        md.push_str(&format!(
            "| {store} | {:.0} | {} | {} | {} | {:.0} | {} | {r:.3} |\n",
            f.ops_per_s,
            us(f.p50),
            us(f.p99),
            b.name,
            b.ops_per_s,
            us(b.p50)
        ));
        js.push(json!({"store": store, "resets_per_s": f.ops_per_s, "baseline": b.name, "baseline_ops_per_s": b.ops_per_s, "ratio": r}));
    }
    md.push_str(&format!(
        "\n**Write amplification on PostgreSQL** — a separate phase of exactly {AMP_CALLS} calls ({CLIENTS} clients) on a\n\
         fresh pool. Statements: {}. Transactions and tuples: `pg_stat_database` deltas (read after the pool\n\
         is closed, since a backend flushes its counters on exit), divided by the calls. Baseline: the\n\
         single-row UPDATE above is 1 statement, 1 transaction, 1 tuple updated per call, so each figure\n\
         is also its ratio to the baseline.\n\n\
         | store | statements/call | transactions/call | tuples inserted/call | tuples updated/call | tuples deleted/call |\n\
         |---|---|---|---|---|---|\n",
        match &pss {
            Ok(()) => "`pg_stat_statements` (enabled on the test server with `ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'` and a restart; BEGIN/COMMIT included, `track_utility` is on)".to_owned(),
            Err(e) => format!("not measured: pg_stat_statements could not be enabled ({e})"),
        }
    ));
    let mut amp_js = Vec::new();
    for a in &amps {
        let per = |x: i64| x as f64 / a.calls as f64;
        let total: Option<i64> = a.statements.as_ref().map(|s| s.iter().map(|r| r.1).sum());
        let [commits, rollbacks, ins, upd, del] = a.db_delta;
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            a.store,
            total.map_or_else(|| "—".to_owned(), |t| format!("{:.2}", per(t))),
            per(commits + rollbacks),
            per(ins),
            per(upd),
            per(del)
        ));
        amp_js.push(json!({"store": a.store, "calls": a.calls, "statements_per_call": total.map(per),
            "xacts_per_call": per(commits + rollbacks), "tup_inserted_per_call": per(ins),
            "tup_updated_per_call": per(upd), "tup_deleted_per_call": per(del),
            "statements": a.statements.as_ref().map(|s| s.iter().map(|(q, c, r)| json!({"query": q, "calls": c, "rows": r})).collect::<Vec<Value>>())}));
    }
    for a in &amps {
        if let Some(s) = &a.statements {
            md.push_str(&format!(
                "\n{} — statements per call (`pg_stat_statements`):\n\n| statement | calls/call | rows/call |\n|---|---|---|\n",
                a.store
            ));
            for (q, c, r) in s {
                md.push_str(&format!(
                    "| `{}` | {:.2} | {:.2} |\n",
                    cell(q),
                    *c as f64 / a.calls as f64,
                    *r as f64 / a.calls as f64
                ));
            }
        }
    }
    let mut figs = Vec::new();
    for (_, f, b) in rows {
        figs.push(f);
        figs.push(b);
    }
    Ok(vec![Section {
        title: "reset_totp_key: throughput and write amplification".into(),
        markdown: md,
        json: json!({"rows": js, "amplification": amp_js, "figures": figures_json(&figs)}),
    }])
}
