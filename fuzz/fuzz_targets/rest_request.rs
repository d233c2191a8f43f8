//! REST request decoding: any route of the table, any verb, any body (and the same text as a query
//! string) through the real router over memory stores. A super-user session exists; the text
//! `@UST@` in the input is replaced with its UST so authenticated paths are reached too.
//! Fails on a panic (libFuzzer aborts on any panic, even one the router would catch) or on a 500.
#![no_main]

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use sso_core::audit::{AuditError, AuditRecord, AuditSink};
use sso_core::config::Config;
use sso_core::service::NewUser;
use sso_core::secret::Password;
use sso_core::Sso;
use tower::ServiceExt;

/// Discards every record (a memory sink would grow for the whole run).
struct NullSink;

#[async_trait::async_trait]
impl AuditSink for NullSink {
    fn name(&self) -> &str {
        "null"
    }
    fn required(&self) -> bool {
        true
    }
    async fn write(&self, _: &AuditRecord) -> Result<(), AuditError> {
        Ok(())
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    routes: Vec<(String, Vec<Method>)>,
    ust: String,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (router, ust, prefix) = rt.block_on(async {
        let cfg = Config::for_tests();
        let sso = Sso::builder(cfg, sso_core::memory::stores()).audit_sink(Arc::new(NullSink)).build().await.unwrap();
        let op = sso.operator_ctx(sso_core::ids::Cid::generate(), "fuzz");
        let data = NewUser {
            username: Some("admin".into()),
            password: Some(Password::new("correct horse battery staple")),
            ..Default::default()
        };
        sso.user().create_super_user(&op, data).await.unwrap();
        let anon = sso_core::CallCtx::new(
            sso_core::ids::Cid::generate(),
            sso.config().apps.default.clone(),
            sso_core::ids::RemoteAddr::localhost(),
        );
        let s = sso
            .user()
            .login(&anon, "admin", &Password::new("correct horse battery staple"), None, None)
            .await
            .unwrap();
        let ust = sso_core::testing::ust_text(&s.ust);
        let prefix = sso.config().http.prefix.trim_end_matches('/').to_owned();
        (sso_http::api::router(sso_http::api::App::new(sso)), ust, prefix)
    });
    let routes = sso_http::api::routes().into_iter().map(|r| (format!("{prefix}{}", r.path), r.methods.to_vec())).collect();
    World { rt, router, routes, ust }
});

const VERBS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

fuzz_target!(|data: &[u8]| {
    let w = &*WORLD;
    let [r, v, rest @ ..] = data else { return };
    let Some((path, _)) = w.routes.get(usize::from(*r) % w.routes.len()) else { return };
    let verb = VERBS[usize::from(*v) % VERBS.len()].clone();
    let body: Vec<u8> = match std::str::from_utf8(rest) {
        Ok(s) => s.replace("@UST@", &w.ust).into_bytes(),
        Err(_) => rest.to_vec(),
    };
    let mut uri = path.clone();
    if *v & 0x80 != 0
        && let Ok(q) = std::str::from_utf8(&body)
        && q.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
    {
        uri = format!("{uri}?{q}");
    }
    let Ok(req) = Request::builder()
        .method(verb)
        .uri(uri)
        .header("content-type", if *v & 0x40 != 0 { "application/x-www-form-urlencoded" } else { "application/json" })
        .body(Body::from(body))
    else {
        return;
    };
    let status = w.rt.block_on(async { w.router.clone().oneshot(req).await.map(|r| r.status()) });
    let Ok(status) = status;
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "a request was answered with 500");
});
