//! In-process micro benchmarks of the hot paths, one call at a time on one task (one core): a
//! warm-up, then timed samples (calls under 2 µs are timed in batches and averaged), median and
//! p99 from the sorted samples. Each row is shown beside a baseline row of the same run.

use std::time::Duration;

use serde_json::json;
use sso_core::Sso;
use sso_core::config::Config;
use sso_core::crypto::password::{self, Verdict};
use sso_core::crypto::{aead, digest, random, totp};
use sso_core::ids::Cid;
use sso_core::secret::{Password, TotpCode, TotpKey, Ust};
use sso_core::service::TotpTarget;
use sso_core::service::views::SessionInfo;
use sso_core::store::Stores;
use sso_core::time::{Clock, ManualClock, SystemClock};

use crate::harness::{PASSWORD, create_user, ratio, sso_on, time_async, time_sync, us, user_ctx};
use crate::{Figure, Section, figures_json};

const FAST_SAMPLES: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(3);
/// Repetitions of the in-process verify and its baseline (interleaved; the fastest is kept).
const REPEATS: usize = 5;
/// Time budget of one repetition.
const REPEAT_BUDGET: Duration = Duration::from_millis(1500);

fn now_step() -> u64 {
    totp::step_of(u64::try_from(SystemClock.now().as_secs()).unwrap_or(0))
}

/// `n` product-profile codes for steps `first..first + n` (computed before timing).
fn codes(key: &TotpKey, first: u64, n: usize) -> Vec<String> {
    (0..n as u64).map(|i| totp::code_for_step(key.expose_bytes(), first + i).to_string()).collect()
}

/// Runs the micro benchmarks.
#[allow(clippy::too_many_lines)]
pub async fn run() -> Result<Vec<Section>, String> {
    let mut rows: Vec<(Figure, usize)> = Vec::new(); // (figure, index of its baseline row)

    // ----- argon2id at the configured default cost: the baseline of logins -----
    let params = Config::default().password.hash_params();
    let normalized = password::normalize(PASSWORD);
    let salt = random::bytes::<16>().map_err(|e| e.to_string())?;
    let lat = time_sync(1, 20, Duration::from_secs(8), || {
        password::hash_argon2id(normalized.as_bytes(), params, &salt)
            .map(|_| ())
            .ok_or_else(|| "hash failed".to_owned())
    })?;
    let hash_row = rows.len();
    rows.push((
        Figure::of(format!("argon2id hash (m = {} KiB, t = {}, p = {})", params.m_kib, params.t, params.p), lat),
        hash_row,
    ));
    let stored =
        password::hash_argon2id(normalized.as_bytes(), params, &salt).ok_or_else(|| "hash failed".to_owned())?;
    let lat = time_sync(1, 20, Duration::from_secs(8), || match password::verify(&stored, PASSWORD, params) {
        Verdict::Match { .. } => Ok(()),
        v => Err(format!("verify: {v:?}")),
    })?;
    rows.push((Figure::of("password verify (same hash, NFKC + argon2id + compare)", lat), hash_row));

    // ----- TOTP -----
    let key = TotpKey::generate().map_err(|e| e.to_string())?;
    let s0 = now_step();
    let pre = codes(&key, s0, FAST_SAMPLES + 64);
    let mut i = 0usize;
    let lat = time_sync(16, FAST_SAMPLES, BUDGET, || {
        let step = s0 + (i % pre.len()) as u64;
        let code = pre.get(i % pre.len()).ok_or("no code")?;
        i += 1;
        totp::match_step(key.expose_bytes(), code, step, 1, 1).map(|_| ()).ok_or_else(|| "no match".to_owned())
    })?;
    let totp_base = rows.len();
    rows.push((Figure::of("TOTP code match, window −1..+1 (3 HMAC-SHA1, constant-time)", lat), totp_base));
    let mem = sso_core::memory::stores();
    let counters = mem.counters.clone();
    let ttl = Duration::from_secs(120);
    let pre = codes(&key, s0, FAST_SAMPLES + 64);
    let mut i = 0usize;
    let lat = time_async(16, FAST_SAMPLES, BUDGET, async || {
        let step = s0 + i as u64;
        let code = match pre.get(i) {
            Some(c) => c.clone(),
            None => totp::code_for_step(key.expose_bytes(), step).to_string(),
        };
        i += 1;
        let m = totp::match_step(key.expose_bytes(), &code, step, 1, 1).ok_or("no match")?;
        let fresh =
            counters.advance_step("totp-step:bench:1", m, SystemClock.now(), ttl).await.map_err(|e| e.to_string())?;
        if fresh { Ok(()) } else { Err("replay refused a fresh step".to_owned()) }
    })
    .await?;
    rows.push((Figure::of("TOTP match + replay compare-and-set (memory CounterStore::advance_step)", lat), totp_base));
    // The whole service call: Operator context, memory stores, throttling on, the clock moved one
    // step per call so that each code is fresh.
    let clock = ManualClock::new(SystemClock.now());
    let sso = sso_on(sso_core::memory::stores(), Some(clock.clone()), |_| {}).await?;
    let uid = create_user(&sso, "totp-user").await?;
    let op = sso.operator_ctx(Cid::generate(), "bench");
    let k = sso
        .user()
        .reset_totp_key(&op, Some(&uid), None, None)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no generated key")?;
    let step_now = || totp::step_of(u64::try_from(clock.now().as_secs()).unwrap_or(0));
    let first = step_now() + 1;
    let pre = codes(&k, first, FAST_SAMPLES + 64);
    let mut i = 0usize;
    let target = uid.as_str().to_owned();
    let lat = time_async(16, FAST_SAMPLES, BUDGET, async || {
        clock.advance(Duration::from_secs(totp::STEP_SECS));
        let code = match pre.get(i) {
            Some(c) => c.clone(),
            None => totp::code_for_step(k.expose_bytes(), step_now()).to_string(),
        };
        i += 1;
        sso.totp()
            .validate_code(&op, Some(&TotpCode::new(code)), TotpTarget::UserId(target.clone()))
            .await
            .map_err(|e| format!("validate_code: {e}"))
    })
    .await?;
    rows.push((Figure::of("sso.totp().validate_code (Operator, memory stores, throttle on)", lat), totp_base));

    // ----- UST -----
    let lat = time_sync(1000, FAST_SAMPLES, BUDGET, || {
        let b = random::bytes::<32>().map_err(|e| e.to_string())?;
        std::hint::black_box(digest::sha256(&b));
        Ok(())
    })?;
    let ust_base = rows.len();
    rows.push((Figure::of("32 random bytes (OS RNG) + SHA-256 of them", lat), ust_base));
    let lat = time_sync(1000, FAST_SAMPLES, BUDGET, || {
        let u = Ust::generate().map_err(|e| e.to_string())?;
        std::hint::black_box(u.hash());
        Ok(())
    })?;
    rows.push((Figure::of("UST generate + hash (Ust::generate, .hash)", lat), ust_base));

    // ----- session verify on the memory store -----
    let stores: Stores = sso_core::memory::stores();
    let (sso, info) = logged_in(stores.clone()).await?;
    let (sid, uid, ust) = (info.session_id.clone(), info.user_id.clone(), info.ust.clone());
    // The bare reads and the verify, interleaved REPEATS times with a shorter budget each; each
    // row keeps its fastest repetition (lowest mean). This machine's speed swings by up to ±30 %
    // between seconds (other tenants); as with Python's `timeit`, the fastest repetition is
    // the best estimate of what the code costs, the slower ones measure the interference. All
    // repetitions' rates are reported.
    let ctx = user_ctx().with_ust(ust.clone());
    let mut bare: Option<Vec<Duration>> = None;
    let mut full: Option<Vec<Duration>> = None;
    let mut verify_rates = Vec::new();
    let mean_of = |v: &[Duration]| v.iter().sum::<Duration>() / u32::try_from(v.len().max(1)).unwrap_or(1);
    let keep_fastest = |slot: &mut Option<Vec<Duration>>, lat: Vec<Duration>| {
        if slot.as_ref().is_none_or(|old| mean_of(&lat) < mean_of(old)) {
            *slot = Some(lat);
        }
    };
    for _ in 0..REPEATS {
        let lat = time_async(1000, FAST_SAMPLES, REPEAT_BUDGET, async || {
            let s = stores.sessions.get(&sid).await.map_err(|e| e.to_string())?;
            let u = stores.users.get_by_id(&uid).await.map_err(|e| e.to_string())?;
            if s.is_some() && u.is_some() { Ok(()) } else { Err("missing session or user".to_owned()) }
        })
        .await?;
        keep_fastest(&mut bare, lat);
        let lat =
            time_async(1000, FAST_SAMPLES, REPEAT_BUDGET, async || match sso.session().verify(&ctx, &ust).await {
                Ok(true) => Ok(()),
                r => Err(format!("verify: {r:?}")),
            })
            .await?;
        verify_rates.push(1.0 / mean_of(&lat).as_secs_f64().max(1e-12));
        keep_fastest(&mut full, lat);
    }
    let verify_base = rows.len();
    rows.push((Figure::of("memory store: sessions.get + users.get_by_id", bare.unwrap_or_default()), verify_base));
    let verify_row = rows.len();
    rows.push((
        Figure::of("sso.session().verify, own UST (memory stores, read audited)", full.unwrap_or_default()),
        verify_base,
    ));
    // The same on the same stores, with reads not audited (audit.include_reads = false).
    let quiet = sso_on(stores.clone(), None, |c| c.audit.include_reads = false).await?;
    let lat = time_async(1000, FAST_SAMPLES, BUDGET, async || match quiet.session().verify(&ctx, &ust).await {
        Ok(true) => Ok(()),
        r => Err(format!("verify: {r:?}")),
    })
    .await?;
    rows.push((Figure::of("sso.session().verify, audit.include_reads = false", lat), verify_base));

    // ----- AEAD of a TOTP key -----
    let ring = aead::KeyRing::generate(SystemClock.now()).map_err(|e| e.to_string())?;
    let aad = aead::aad::user_field(uid.as_str(), "totp_key");
    let plain = key.expose_base32().as_bytes().to_vec();
    let hkey = [7u8; 32];
    let lat = time_sync(1000, FAST_SAMPLES, BUDGET, || {
        std::hint::black_box(digest::hmac_sha256(&hkey, &plain));
        Ok(())
    })?;
    let aead_base = rows.len();
    rows.push((Figure::of("HMAC-SHA256 of the same 32 bytes", lat), aead_base));
    let lat = time_sync(1000, FAST_SAMPLES, BUDGET, || {
        std::hint::black_box(ring.encrypt(&aad, &plain).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    rows.push((Figure::of("AEAD encrypt of a TOTP key (XChaCha20-Poly1305 envelope)", lat), aead_base));
    let env = ring.encrypt(&aad, &plain).map_err(|e| e.to_string())?;
    let lat = time_sync(1000, FAST_SAMPLES, BUDGET, || {
        std::hint::black_box(ring.decrypt(&aad, &env).map_err(|e| format!("{e:?}"))?);
        Ok(())
    })?;
    rows.push((Figure::of("AEAD decrypt of a TOTP key", lat), aead_base));

    // ----- report -----
    let mut md = String::from(
        "One call at a time on one task (one core), in process; warm-up, then up to 20 000 samples (20 for\n\
         argon2id) or 3 s; calls under 2 µs are timed in batches and averaged per call. calls/s = 1 / mean.\n\
         The ratio is this row's p50 over its baseline's p50 (same run). argon2id at the default cost is\n\
         the baseline of the login benchmarks. No audit sink is configured (records are built, then\n\
         written nowhere).\n\n\
         | operation | calls/s (1 core) | p50 µs | p99 µs | baseline (same run) | ratio (p50 / baseline p50) |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut js = Vec::new();
    for (f, b) in &rows {
        let base = rows.get(*b).map(|r| &r.0).unwrap_or(f);
        let r = ratio(f.p50.as_secs_f64(), base.p50.as_secs_f64());
        let bname = if std::ptr::eq(base, f) { "— (baseline)".to_owned() } else { base.name.clone() };
        md.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {:.2} |\n",
            f.name,
            f.ops_per_s,
            us(f.p50),
            us(f.p99),
            bname,
            r
        ));
        js.push(json!({"name": f.name, "baseline": base.name, "ratio_p50": r}));
    }
    let verify = rows.get(verify_row).map(|r| r.0.ops_per_s).unwrap_or_default();
    let rates = verify_rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    md.push_str(&format!(
        "\nIn-process session verify: **{verify:.0} calls/s per core** against the goal of 1 000 000 ({:.2} of the goal);\n\
         the fastest of {REPEATS} repetitions interleaved with its baseline's (all five: {rates} calls/s).\n",
        verify / 1e6
    ));
    let figs: Vec<Figure> = rows.iter().map(|r| r.0.clone()).collect();
    Ok(vec![Section {
        title: "Micro benchmarks (in process, one core)".into(),
        markdown: md,
        json: json!({"figures": figures_json(&figs), "ratios": js, "session_verify_per_core": verify, "session_verify_repetitions": verify_rates}),
    }])
}

/// An `Sso` over `stores` with user `alice` logged in once.
async fn logged_in(stores: Stores) -> Result<(Sso, SessionInfo), String> {
    let sso = sso_on(stores, None, |_| {}).await?;
    create_user(&sso, "alice").await?;
    let info = sso
        .user()
        .login(&user_ctx(), "alice", &Password::new(PASSWORD), None, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok((sso, info))
}

/// `sso-bench profile-verify`: in-process session verify on the memory store in a loop for
/// `SSO_BENCH_SECS` (default 10) seconds — a steady workload to run under `perf record`. Not a
/// report group.
pub async fn profile_verify() -> Result<(), String> {
    let secs: u64 = std::env::var("SSO_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (sso, info) = logged_in(sso_core::memory::stores()).await?;
    let ctx = user_ctx().with_ust(info.ust.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while std::time::Instant::now() < deadline {
        for _ in 0..1000 {
            if !sso.session().verify(&ctx, &info.ust).await.map_err(|e| e.to_string())? {
                return Err("verify said invalid".into());
            }
        }
        n += 1000;
    }
    eprintln!("{n} verifies in {secs} s: {:.0}/s", n as f64 / secs as f64);
    Ok(())
}
