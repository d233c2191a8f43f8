//! User lookup and name search at 10 000 and 1 000 000 users on SQLite and PostgreSQL (issue:
//! "each stays within a small constant factor of the small figure"). The upper size is
//! `SSO_BENCH_SCALE_MAX` (default 1 000 000). Users are created by a bulk helper: transactions of
//! 5 000 rows through the store's public `UserTx` (PostgreSQL: 4 such transactions in parallel;
//! SQLite has one writer, so one at a time).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sso_core::ids::UserId;
use sso_core::model::{ApprovalStatus, NameField, SignUpStatus, UserQuery, UserRecord, upper};
use sso_core::store::Stores;
use sso_core::time::Timestamp;

use crate::{Figure, Section, figures_json, row};

const FIRST: [&str; 8] = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Gina", "Hugo"];

fn uid(i: usize) -> Result<UserId, String> {
    // Decimal digits are Crockford digits: always a valid id.
    UserId::parse(&format!("zusr{i:026}")).ok_or_else(|| format!("bad id {i}"))
}

fn user(i: usize) -> Result<UserRecord, String> {
    let t = Timestamp::from_secs(1_795_773_600 + i as i64);
    let first = FIRST.get(i % FIRST.len()).map(|s| (*s).to_owned());
    let last = Some(format!("L{i:07}x"));
    let display = Some(format!("{} {}", first.as_deref().unwrap_or(""), last.as_deref().unwrap_or("")));
    Ok(UserRecord {
        user_id: uid(i)?,
        username: format!("user{i:07}"),
        password_hash:
            "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        password_is_set: true,
        password_must_change: false,
        password_last_set: t,
        password_expiry: None,
        email_enc: Some(format!("enc1.k.email{i}")),
        email_idx: Some(format!("{i:064x}")),
        display_name_upper: upper(&display),
        first_name_upper: upper(&first),
        middle_name_upper: None,
        last_name_upper: upper(&last),
        display_name: display,
        first_name: first,
        middle_name: None,
        last_name: last,
        is_super_user: false,
        is_locked: false,
        locked_time: None,
        locked_by: None,
        approval_status: ApprovalStatus::Approved,
        approval_status_mod_time: t,
        approval_status_mod_by: "auto".into(),
        sign_up_status: SignUpStatus::Final,
        sign_up_time: t,
        sign_up_confirm_time: None,
        confirm_token_hash: None,
        creation_ctx: "{\"via\":\"bench\"}".into(),
        is_totp_enabled: false,
        totp_key_enc: "enc1.k.key".into(),
        totp_label_enc: "enc1.k.label".into(),
        totp_key_gen: 1,
        session_epoch: 1,
    })
}

/// Rows per bulk transaction.
const BATCH: usize = 5_000;

/// The bulk helper: `from..to` users in transactions of [`BATCH`] rows, `workers` at a time.
async fn bulk_insert(stores: &Stores, from: usize, to: usize, workers: usize) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (stores, next) = (stores.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(BATCH, Ordering::SeqCst);
                if i >= to {
                    return Ok::<(), String>(());
                }
                let end = (i + BATCH).min(to);
                let mut tx = stores.users.begin().await.map_err(|e| e.to_string())?;
                for j in i..end {
                    tx.insert_user(&user(j)?).await.map_err(|e| e.to_string())?;
                }
                tx.commit().await.map_err(|e| e.to_string())?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// `1k`, `10k`, `1M`, … for labels.
fn short(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// `1 000 000` style.
fn spaced(n: usize) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The upper size: `SSO_BENCH_SCALE_MAX`, default 1 000 000.
fn scale_max() -> usize {
    std::env::var("SSO_BENCH_SCALE_MAX").ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(1_000_000)
}

/// A deterministic spread of indices below `n`.
fn picks(n: usize, count: usize) -> Vec<usize> {
    (0..count).map(|k| (k.wrapping_mul(7919).wrapping_add(13)) % n).collect()
}

/// Time budget per lookup figure and per search figure (at least 5 samples each).
const LOOKUP_BUDGET: Duration = Duration::from_secs(3);
const SEARCH_BUDGET: Duration = Duration::from_secs(5);

async fn measure(stores: &Stores, n: usize, label: &str) -> Result<Vec<Figure>, String> {
    let mut out = Vec::new();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for i in picks(n, 2000) {
        if lat.len() >= 5 && t0.elapsed() > LOOKUP_BUDGET {
            break;
        }
        let id = uid(i)?;
        let t = Instant::now();
        stores.users.get_by_id(&id).await.map_err(|e| e.to_string())?.ok_or("missing user")?;
        lat.push(t.elapsed());
    }
    out.push(Figure::of(format!("{label} get_by_id"), lat));
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for i in picks(n, 2000) {
        if lat.len() >= 5 && t0.elapsed() > LOOKUP_BUDGET {
            break;
        }
        let name = format!("user{i:07}");
        let t = Instant::now();
        stores.users.get_by_username(&name).await.map_err(|e| e.to_string())?.ok_or("missing user")?;
        lat.push(t.elapsed());
    }
    out.push(Figure::of(format!("{label} get_by_username"), lat));
    for (exact, what) in [(true, "search last name (exact)"), (false, "search last name (substring)")] {
        let mut lat = Vec::new();
        let t0 = Instant::now();
        for i in picks(n, 300) {
            if lat.len() >= 5 && t0.elapsed() > SEARCH_BUDGET {
                break;
            }
            let v = if exact { format!("L{i:07}X") } else { format!("{i:07}X") };
            let q = UserQuery { names: vec![(NameField::LastName, v)], names_exact: exact, ..Default::default() };
            let t = Instant::now();
            let (total, page) = stores.users.search(&q, 0, 50).await.map_err(|e| e.to_string())?;
            lat.push(t.elapsed());
            if total != 1 || page.len() != 1 {
                return Err(format!("{what}: expected one match, got {total}"));
            }
        }
        out.push(Figure::of(format!("{label} {what}"), lat));
    }
    Ok(out)
}

async fn one_store(name: &str, stores: Stores, workers: usize) -> Result<(String, serde_json::Value), String> {
    let large = scale_max().max(2);
    let small = 10_000.min(large / 2).max(1);
    let (ls, ll) = (short(small), short(large));
    bulk_insert(&stores, 0, small, workers).await?;
    let a = measure(&stores, small, &ls).await?;
    let t = Instant::now();
    bulk_insert(&stores, small, large, workers).await?;
    let bulk = t.elapsed();
    let b = measure(&stores, large, &ll).await?;
    let mut md = format!(
        "**{name}** — bulk insert of {} users ({} per transaction, {workers} transaction(s) at a time): {:.1} s ({:.0} users/s)\n\n| operation | {} users (µs, p50) | {} users (µs, p50) | ratio |\n|---|---|---|---|\n",
        spaced(large - small),
        spaced(BATCH),
        bulk.as_secs_f64(),
        (large - small) as f64 / bulk.as_secs_f64(),
        spaced(small),
        spaced(large),
    );
    let mut ratios = Vec::new();
    for (x, y) in a.iter().zip(&b) {
        let op = x.name.trim_start_matches(&format!("{ls} ")).to_owned();
        let ratio = y.p50.as_secs_f64() / x.p50.as_secs_f64().max(1e-9);
        md.push_str(&format!(
            "| {op} | {:.1} | {:.1} | {ratio:.2} |\n",
            x.p50.as_secs_f64() * 1e6,
            y.p50.as_secs_f64() * 1e6
        ));
        ratios.push(json!({"op": op, "ratio_p50": ratio}));
    }
    md.push_str("\n| figure | ops/s | mean µs | p50 µs | p99 µs |\n|---|---|---|---|---|\n");
    for f in a.iter().chain(&b) {
        md.push_str(&row(f));
        md.push('\n');
    }
    Ok((
        md,
        json!({"small_users": small, "large_users": large, "small": figures_json(&a), "large": figures_json(&b), "ratios": ratios, "bulk_users_per_s": (large - small) as f64 / bulk.as_secs_f64()}),
    ))
}

/// Runs the scale benchmark on SQLite and PostgreSQL.
pub async fn run() -> Result<Vec<Section>, String> {
    let large = scale_max().max(2);
    let small = 10_000.min(large / 2).max(1);
    let mut md = format!(
        "User lookups and name searches measured at {} and again at {} users (`SSO_BENCH_SCALE_MAX`), in the\nsame run (the baseline of each row is the {}-user figure). One client, sequential calls, store level;\nup to 2 000 lookups (3 s) and 300 searches (5 s) per figure, at least 5.\n\n",
        spaced(small),
        spaced(large),
        spaced(small)
    );
    let mut js = serde_json::Map::new();
    let dir = std::env::temp_dir().join(format!("sso-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sqlite = crate::harness::sqlite_in(&dir, "scale.db").await?;
    let (m, j) = one_store("SQLite", sqlite.stores(), 1).await?;
    md.push_str(&m);
    js.insert("sqlite".into(), j);
    let pg = sso_testkit::PgServer::start()?;
    let store =
        sso_store_postgres::PgStore::open(&pg.url("postgres"), &Default::default()).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let (m, j) = one_store("PostgreSQL", store.stores(), 4).await?;
    md.push('\n');
    md.push_str(&m);
    js.insert("postgres".into(), j);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![Section {
        title: format!("Scale: {} vs {} users", spaced(small), spaced(large)),
        markdown: md,
        json: serde_json::Value::Object(js),
    }])
}
