//! User lookup and name search at 1 000 and 100 000 users on SQLite and PostgreSQL (issue:
//! "each stays within a small constant factor of the 1 000-user figure"). Users are created by a
//! bulk helper (batches of 1 000 rows per transaction through the store's `UserTx`).

use std::time::Instant;

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

/// The bulk helper: `from..to` users in transactions of 1 000.
async fn bulk_insert(stores: &Stores, from: usize, to: usize) -> Result<(), String> {
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        let mut tx = stores.users.begin().await.map_err(|e| e.to_string())?;
        for j in i..end {
            tx.insert_user(&user(j)?).await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        i = end;
    }
    Ok(())
}

/// A deterministic spread of indices below `n`.
fn picks(n: usize, count: usize) -> Vec<usize> {
    (0..count).map(|k| (k.wrapping_mul(7919).wrapping_add(13)) % n).collect()
}

async fn measure(stores: &Stores, n: usize, label: &str) -> Result<Vec<Figure>, String> {
    let mut out = Vec::new();
    let mut lat = Vec::new();
    for i in picks(n, 2000) {
        let id = uid(i)?;
        let t = Instant::now();
        stores.users.get_by_id(&id).await.map_err(|e| e.to_string())?.ok_or("missing user")?;
        lat.push(t.elapsed());
    }
    out.push(Figure::of(format!("{label} get_by_id"), lat));
    let mut lat = Vec::new();
    for i in picks(n, 2000) {
        let name = format!("user{i:07}");
        let t = Instant::now();
        stores.users.get_by_username(&name).await.map_err(|e| e.to_string())?.ok_or("missing user")?;
        lat.push(t.elapsed());
    }
    out.push(Figure::of(format!("{label} get_by_username"), lat));
    for (exact, what) in [(true, "search last name (exact)"), (false, "search last name (substring)")] {
        let mut lat = Vec::new();
        for i in picks(n, 300) {
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

async fn one_store(name: &str, stores: Stores) -> Result<(String, serde_json::Value), String> {
    let small = 1_000;
    let large = 100_000;
    bulk_insert(&stores, 0, small).await?;
    let a = measure(&stores, small, "1k").await?;
    let t = Instant::now();
    bulk_insert(&stores, small, large).await?;
    let bulk = t.elapsed();
    let b = measure(&stores, large, "100k").await?;
    let mut md = format!(
        "**{name}** — bulk insert of {} users: {:.1} s ({:.0} users/s)\n\n| operation | 1 000 users (µs, p50) | 100 000 users (µs, p50) | ratio |\n|---|---|---|---|\n",
        large - small,
        bulk.as_secs_f64(),
        (large - small) as f64 / bulk.as_secs_f64()
    );
    let mut ratios = Vec::new();
    for (x, y) in a.iter().zip(&b) {
        let op = x.name.trim_start_matches("1k ").to_owned();
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
        json!({"small": figures_json(&a), "large": figures_json(&b), "ratios": ratios, "bulk_users_per_s": (large - small) as f64 / bulk.as_secs_f64()}),
    ))
}

/// Runs the scale benchmark on SQLite and PostgreSQL.
pub async fn run() -> Result<Vec<Section>, String> {
    let mut md = String::from(
        "User lookups and name searches measured at 1 000 and again at 100 000 users, in the same run\n(the baseline of each row is the 1 000-user figure). One client, sequential calls, store level.\n\n",
    );
    let mut js = serde_json::Map::new();
    let dir = std::env::temp_dir().join(format!("sso-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sqlite = sso_store_sqlite::SqliteStore::open(
        &format!("sqlite://{}", dir.join("scale.db").display()),
        &sso_store_sqlite::SqliteOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    sqlite.migrate().await.map_err(|e| e.to_string())?;
    let (m, j) = one_store("SQLite", sqlite.stores()).await?;
    md.push_str(&m);
    js.insert("sqlite".into(), j);
    let pg = sso_testkit::PgServer::start()?;
    let store =
        sso_store_postgres::PgStore::open(&pg.url("postgres"), &Default::default()).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let (m, j) = one_store("PostgreSQL", store.stores()).await?;
    md.push('\n');
    md.push_str(&m);
    js.insert("postgres".into(), j);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![Section {
        title: "Scale: 1 000 vs 100 000 users".into(),
        markdown: md,
        json: serde_json::Value::Object(js),
    }])
}
