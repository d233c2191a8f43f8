//! The HTTP API (spec/rest.md) on axum. One route table drives both the router and the OpenAPI
//! document, so the two cannot drift apart. The layer translates only: it decodes input, builds the
//! `CallCtx`, calls one core operation and maps the result; it decides nothing.

mod handlers;
pub mod input;
pub mod openapi;
pub mod reply;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ipnet::IpNet;
use serde_json::{Map, Value};
use sso_core::Sso;
use sso_core::config::Config;
use tokio::sync::Mutex;

use input::Req;
use reply::Reply;

/// Shared state of the HTTP layer: one `Arc`, so the per-request clones the extractors make are a
/// single reference-count increment (not one per field, each a contended cache line).
#[derive(Clone)]
pub struct App(Arc<AppState>);

/// What [`App`] shares.
pub struct AppState {
    /// The facade.
    pub sso: Sso,
    /// The configuration.
    pub cfg: Arc<Config>,
    /// Parsed `http.trusted_proxies`.
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// `apps.http_header`, lower-cased.
    pub app_header: Arc<String>,
    health: Mutex<Option<(Instant, bool, Value)>>,
}

impl std::ops::Deref for App {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.0
    }
}

impl App {
    /// State over an `Sso` and its configuration.
    pub fn new(sso: Sso) -> App {
        let cfg = sso.config().clone();
        let trusted = cfg.http.trusted_proxies.iter().filter_map(|p| sso_core::config::parse_net(p).ok()).collect();
        App(Arc::new(AppState {
            app_header: Arc::new(cfg.apps.http_header.to_ascii_lowercase()),
            trusted_proxies: Arc::new(trusted),
            cfg: Arc::new(cfg),
            sso,
            health: Mutex::new(None),
        }))
    }
}

/// A handler: decoded request in, reply out (`Err` replies are errors already mapped).
pub type Handler = fn(App, Req) -> BoxFuture<'static, Result<Reply, Reply>>;

/// One row of the route table.
pub struct RouteDef {
    /// Path under the prefix.
    pub path: &'static str,
    /// Verbs served.
    pub methods: &'static [Method],
    /// One-line description.
    pub summary: &'static str,
    /// Request fields the endpoint reads (strict mode refuses others).
    pub fields: &'static [&'static str],
    /// Response fields besides `cid`, `status`, `sub_status`.
    pub response: &'static [&'static str],
    /// The handler.
    pub handler: Handler,
}

const ANY: &[Method] = &[Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

macro_rules! route {
    ($path:literal, $methods:expr, $summary:literal, [$($f:literal),*], [$($r:literal),*], $h:path) => {
        RouteDef {
            path: $path,
            methods: $methods,
            summary: $summary,
            fields: &[$($f),*],
            response: &[$($r),*],
            handler: |app, req| Box::pin($h(app, req)),
        }
    };
}

const ATTR_FIELDS: &[&str] = &[
    "ust",
    "current_ust",
    "user_id",
    "target_ust",
    "target_session_id",
    "name",
    "value",
    "expiration",
    "encrypt",
    "data",
    "decrypt",
];

/// Every route under the prefix (spec/rest.md §3).
pub fn routes() -> Vec<RouteDef> {
    use handlers as h;
    let mut v = vec![
        route!(
            "/user/login",
            ANY,
            "Log in (3.1)",
            ["username", "password", "totp_code", "new_password", "remote_addr", "user_agent"],
            ["ust", "user_id", "session_id", "creation_time", "expiration_time"],
            h::login
        ),
        route!("/user/logout", ANY, "Log out (3.2)", ["ust"], [], h::logout),
        route!(
            "/user",
            &[Method::GET, Method::POST, Method::PATCH, Method::DELETE],
            "Get, create, update or delete a user (3.3-3.6)",
            [
                "ust",
                "user_id",
                "username",
                "password",
                "password_must_change",
                "email",
                "display_name",
                "first_name",
                "middle_name",
                "last_name",
                "is_locked",
                "sign_up_status",
                "is_totp_enabled",
                "totp_key",
                "totp_label",
                "auto_approve",
                "password_expiry",
                "approval_status",
                "totp_code"
            ],
            [
                "username",
                "email",
                "display_name",
                "first_name",
                "middle_name",
                "last_name",
                "is_totp_enabled",
                "totp_label",
                "user_id",
                "is_super_user",
                "is_locked",
                "approval_status",
                "sign_up_status"
            ],
            h::user
        ),
        route!(
            "/user/signup",
            &[Method::POST, Method::PATCH],
            "Sign up (3.7) or confirm a sign-up (3.8)",
            ["username", "password", "email", "app_list", "confirm_token"],
            ["confirm_token"],
            h::signup
        ),
        route!("/user/approve", &[Method::POST], "Approve a user (3.9)", ["ust", "user_id"], [], h::approve),
        route!("/user/reject", &[Method::POST], "Reject a user (3.9)", ["ust", "user_id"], [], h::reject),
        route!(
            "/user/password",
            &[Method::PATCH],
            "Change a password (3.10)",
            ["ust", "user_id", "old_password", "new_password", "password_expiry", "must_change"],
            [],
            h::change_password
        ),
        route!(
            "/user/search",
            ANY,
            "Search users (3.11)",
            [
                "ust",
                "user_id",
                "username",
                "email",
                "display_name",
                "first_name",
                "middle_name",
                "last_name",
                "sign_up_status",
                "approval_status",
                "paginate",
                "cur_page",
                "page_size",
                "name_op",
                "is_name_exact"
            ],
            [
                "total",
                "num_pages",
                "page_size",
                "cur_page",
                "has_next_page",
                "has_prev_page",
                "next_page",
                "prev_page",
                "result"
            ],
            h::search
        ),
        route!(
            "/user/lock",
            &[Method::POST, Method::DELETE],
            "Lock (POST) or unlock (DELETE) a user (3.12)",
            ["ust", "user_id"],
            [],
            h::lock
        ),
        route!(
            "/user/totp",
            &[Method::PATCH],
            "Reset a TOTP key (3.13)",
            ["ust", "user_id", "totp_key", "totp_label"],
            ["totp_key", "totp_uri"],
            h::reset_totp_key
        ),
        route!(
            "/user/totp/uri",
            &[Method::GET],
            "TOTP enrolment URI and QR code (3.14)",
            ["ust"],
            ["totp_uri", "totp_qr_svg"],
            h::totp_uri
        ),
        route!(
            "/user/totp/validate",
            &[Method::POST],
            "Validate a TOTP code (3.15)",
            ["ust", "totp_code", "user_id", "username"],
            [],
            h::totp_validate
        ),
        route!(
            "/user/linked",
            &[Method::GET, Method::POST, Method::DELETE],
            "Linked principals (3.16)",
            ["ust", "user_id", "auth_type", "auth_username", "is_active"],
            ["result", "auth_id"],
            h::linked
        ),
        route!(
            "/user/session",
            &[Method::GET, Method::POST, Method::PATCH, Method::DELETE],
            "Get, verify, renew or revoke a session (3.17)",
            ["ust", "current_ust", "target_ust", "target_session_id", "session_id"],
            [
                "session_id",
                "creation_time",
                "expiration_time",
                "remote_addr",
                "user_agent",
                "current_app",
                "auth_type",
                "auth_principal",
                "is_valid"
            ],
            h::session
        ),
        route!(
            "/user/session/list",
            &[Method::GET],
            "List sessions (3.18)",
            ["ust", "current_ust", "target_ust", "user_id"],
            ["result"],
            h::session_list
        ),
        route!(
            "/user/logout/all",
            &[Method::POST],
            "Revoke all sessions (3.19)",
            ["ust", "user_id", "keep_current"],
            ["revoked"],
            h::logout_all
        ),
        route!(
            "/password/reset",
            &[Method::POST, Method::PATCH, Method::DELETE],
            "Password reset: create, access, change (3.22)",
            ["credential", "token", "reset_key", "password"],
            ["reset_key"],
            h::password_reset
        ),
        route!(
            "/audit",
            &[Method::GET],
            "Query the audit trail (3.23)",
            ["ust", "cid", "user_id", "op", "outcome", "since", "until", "limit", "before"],
            ["result", "next_before"],
            h::audit_query
        ),
    ];
    for (scope, base) in [(h::Scope::User, "/user/attr"), (h::Scope::Session, "/session/attr")] {
        let (main, exists, names, expiry): (Handler, Handler, Handler, Handler) = match scope {
            h::Scope::User => (
                |a, r| Box::pin(h::attr(a, r, h::Scope::User)),
                |a, r| Box::pin(h::attr_exists(a, r, h::Scope::User)),
                |a, r| Box::pin(h::attr_names(a, r, h::Scope::User)),
                |a, r| Box::pin(h::attr_expiry(a, r, h::Scope::User)),
            ),
            h::Scope::Session => (
                |a, r| Box::pin(h::attr(a, r, h::Scope::Session)),
                |a, r| Box::pin(h::attr_exists(a, r, h::Scope::Session)),
                |a, r| Box::pin(h::attr_names(a, r, h::Scope::Session)),
                |a, r| Box::pin(h::attr_expiry(a, r, h::Scope::Session)),
            ),
        };
        let paths: [&'static str; 4] = match scope {
            h::Scope::User => ["/user/attr", "/user/attr/exists", "/user/attr/names", "/user/attr/expiry"],
            h::Scope::Session => {
                ["/session/attr", "/session/attr/exists", "/session/attr/names", "/session/attr/expiry"]
            }
        };
        let _ = base;
        v.push(RouteDef {
            path: paths[0],
            methods: &[Method::POST, Method::PUT, Method::PATCH, Method::GET, Method::DELETE],
            summary: "Attributes: create (POST), set (PUT), update (PATCH), get, delete (3.20/3.21)",
            fields: ATTR_FIELDS,
            response: &[
                "found",
                "name",
                "value",
                "creation_time",
                "last_modified",
                "expiration_time",
                "is_encrypted",
                "result",
            ],
            handler: main,
        });
        v.push(RouteDef {
            path: paths[1],
            methods: &[Method::GET],
            summary: "Whether attributes exist",
            fields: ATTR_FIELDS,
            response: &["result"],
            handler: exists,
        });
        v.push(RouteDef {
            path: paths[2],
            methods: &[Method::GET],
            summary: "Attribute names",
            fields: ATTR_FIELDS,
            response: &["result"],
            handler: names,
        });
        v.push(RouteDef {
            path: paths[3],
            methods: &[Method::PATCH],
            summary: "Set attribute expiry",
            fields: ATTR_FIELDS,
            response: &[],
            handler: expiry,
        });
    }
    v
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        _ => MethodFilter::DELETE,
    }
}

async fn run(app: App, req: Req, def_fields: &'static [&'static str], handler: Handler) -> Response {
    if let Err(r) = req.check_known(app.cfg.http.reject_unknown_fields, def_fields) {
        return r.into_response();
    }
    match handler(app, req).await {
        Ok(r) | Err(r) => r.into_response(),
    }
}

/// The router: every route under `http.prefix`, the operational endpoints, 404/405 bodies,
/// the body limit, the request timeout and a last-resort panic handler.
pub fn router(app: App) -> Router {
    let prefix = app.cfg.http.prefix.trim_end_matches('/').to_owned();
    let mut r: Router<App> = Router::new();
    for def in routes() {
        let handler = def.handler;
        let fields = def.fields;
        let mut mr: MethodRouter<App> = MethodRouter::new();
        for m in def.methods {
            mr = mr.on(filter(m), move |State(app): State<App>, req: Req| run(app, req, fields, handler));
        }
        r = r.route(&format!("{prefix}{}", def.path), mr);
    }
    r = r.route("/health", get(health));
    if app.cfg.http.metrics_enabled {
        r = r.route("/metrics", get(metrics));
    }
    if app.cfg.http.openapi_enabled {
        r = r.route("/openapi.json", get(openapi_doc));
    }
    r.fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(app.cfg.http.max_body_bytes))
        .with_state(app)
}

fn cid_of(req: &Request) -> String {
    ["x-zato-cid", "x-request-id"]
        .iter()
        .filter_map(|n| req.headers().get(*n).and_then(|v| v.to_str().ok()))
        .find_map(sso_core::ids::Cid::parse)
        .unwrap_or_else(sso_core::ids::Cid::generate)
        .to_string()
}

/// Timeout, panic containment, plain bodies for axum's own 405s, CORS and response headers.
async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    // Pin the cid so the handler and the guard agree even when it was generated here.
    let cid = cid_of(&req);
    if let Ok(v) = HeaderValue::from_str(&cid) {
        req.headers_mut().insert("x-zato-cid", v);
    }
    let origin = req.headers().get(axum::http::header::ORIGIN).cloned();
    let timeout = Duration::from_millis(app.cfg.http.request_timeout_ms);
    let fut = AssertUnwindSafe(next.run(req)).catch_unwind();
    let mut resp = match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(_)) => {
            tracing::error!(%cid, "request handler panicked");
            Reply::plain(StatusCode::INTERNAL_SERVER_ERROR, &cid).into_response()
        }
        Err(_) => {
            tracing::warn!(%cid, "request timed out");
            Reply::plain(StatusCode::SERVICE_UNAVAILABLE, &cid).into_response()
        }
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key("x-zato-cid") {
        let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
        resp = Reply::plain(StatusCode::METHOD_NOT_ALLOWED, &cid).into_response();
        if let Some(a) = allow {
            resp.headers_mut().insert(axum::http::header::ALLOW, a);
        }
    }
    reply::common_headers(resp.headers_mut(), &cid);
    if let Some(o) = origin {
        let allowed = o.to_str().is_ok_and(|s| app.cfg.http.cors_allowed_origins.iter().any(|a| a == s));
        if allowed {
            resp.headers_mut().insert(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            resp.headers_mut().insert(axum::http::header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    resp
}

async fn not_found(req: Request) -> Response {
    Reply::plain(StatusCode::NOT_FOUND, &cid_of(&req)).into_response()
}

async fn health(State(app): State<App>) -> Response {
    let mut cached = app.health.lock().await;
    let fresh = cached.as_ref().is_some_and(|(t, _, _)| t.elapsed() < Duration::from_secs(1));
    if !fresh {
        let checks = tokio::time::timeout(Duration::from_secs(1), app.sso.health()).await;
        let mut m = Map::new();
        let mut ok = true;
        match checks {
            Ok(list) => {
                for (name, good) in list {
                    ok &= good;
                    m.insert(name.into(), Value::from(if good { "ok" } else { "error" }));
                }
            }
            Err(_) => {
                ok = false;
                for name in ["users", "sessions", "counters"] {
                    m.insert(name.into(), Value::from("error"));
                }
            }
        }
        m.insert("audit".into(), Value::from("ok"));
        m.insert("key_ring".into(), Value::from("ok"));
        *cached = Some((Instant::now(), ok, Value::Object(m)));
    }
    let (ok, checks) = cached.as_ref().map(|(_, ok, c)| (*ok, c.clone())).unwrap_or((false, Value::Null));
    let body = serde_json::json!({ "status": if ok { "ok" } else { "error" }, "checks": checks });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.sso.render_metrics()).into_response()
}

async fn openapi_doc(State(app): State<App>) -> Response {
    axum::Json(openapi::document(&app.cfg.http.prefix)).into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, letting in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
