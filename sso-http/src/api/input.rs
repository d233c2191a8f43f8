//! Request decoding (spec/rest.md §1): a JSON-object body on every verb, query parameters merged
//! on GET, secrets refused in query strings, `Authorization: Bearer` for the UST, `current_app`
//! from the body or its header, a sane `cid` or a generated one, and the client address from the
//! socket peer or trusted proxies. Typed field access answers 400 for missing or mistyped fields.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderMap, Method};
use serde_json::{Map, Value};
use sso_core::CallCtx;
use sso_core::ids::{Cid, RemoteAddr};

use super::App;
use super::reply::Reply;

/// Fields never accepted from a query string.
pub const SECRET_FIELDS: &[&str] = &[
    "ust",
    "current_ust",
    "target_ust",
    "password",
    "old_password",
    "new_password",
    "totp_code",
    "totp_key",
    "token",
    "reset_key",
    "confirm_token",
    "credential",
];

/// A decoded request.
#[derive(Debug)]
pub struct Req {
    /// Correlation id (given or generated).
    pub cid: String,
    /// HTTP method.
    pub method: Method,
    /// Body fields (merged with query parameters on GET).
    pub fields: Map<String, Value>,
    /// The `Authorization: Bearer` token, if any.
    pub bearer: Option<String>,
    /// `current_app` from the header.
    pub app_header: Option<String>,
    /// Client address.
    pub remote: RemoteAddr,
    /// `User-Agent`.
    pub user_agent: Option<String>,
}

/// The outcome of a field read: the value, or the 400 reply.
pub type Field<T> = Result<T, Reply>;

fn cid_from(h: &HeaderMap) -> String {
    ["x-zato-cid", "x-request-id"]
        .iter()
        .filter_map(|n| h.get(*n).and_then(|v| v.to_str().ok()))
        .find_map(Cid::parse)
        .unwrap_or_else(Cid::generate)
        .to_string()
}

/// The client address: the socket peer, or the right-most untrusted `X-Forwarded-For` hop when
/// the peer is a trusted proxy.
fn client_addr(app: &App, peer: IpAddr, h: &HeaderMap) -> RemoteAddr {
    let trusted = |ip: &IpAddr| app.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return RemoteAddr::single(peer);
    }
    let hops: Vec<IpAddr> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    let client = hops.iter().rev().find(|ip| !trusted(ip)).copied().unwrap_or(peer);
    RemoteAddr::single(client)
}

fn parse_query(q: &str) -> Result<Map<String, Value>, ()> {
    let mut m = Map::new();
    for (k, v) in form_pairs(q)? {
        if m.insert(k, Value::String(v)).is_some() {
            return Err(());
        }
    }
    Ok(m)
}

fn form_pairs(q: &str) -> Result<Vec<(String, String)>, ()> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or(())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ())
}

impl FromRequest<App> for Req {
    type Rejection = Reply;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let cid = cid_from(req.headers());
        let method = req.method().clone();
        let headers = req.headers().clone();
        let query = req.uri().query().unwrap_or("").to_owned();
        let peer =
            req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let body = Bytes::from_request(req, app).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Reply::plain(axum::http::StatusCode::PAYLOAD_TOO_LARGE, &cid)
            } else {
                Reply::bad_request(&cid)
            }
        })?;
        let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(m)) => m,
                _ => return Err(Reply::bad_request(&cid)),
            }
        };
        if !query.is_empty() {
            let q = parse_query(&query).map_err(|_| Reply::bad_request(&cid))?;
            if q.keys().any(|k| SECRET_FIELDS.contains(&k.as_str())) {
                return Err(Reply::bad_request(&cid));
            }
            if method == Method::GET {
                for (k, v) in q {
                    if fields.contains_key(&k) {
                        return Err(Reply::bad_request(&cid));
                    }
                    fields.insert(k, v);
                }
            }
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_owned());
        let app_header = headers.get(app.app_header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let user_agent = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let remote = client_addr(app, peer, &headers);
        Ok(Req { cid, method, fields, bearer, app_header, remote, user_agent })
    }
}

/// Lenient booleans: `true/false`, the strings `true false 1 0 yes no on off` (any case), 0/1.
pub fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Integers: JSON numbers or decimal strings.
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Req {
    /// A 400 reply for this request.
    pub fn bad(&self) -> Reply {
        Reply::bad_request(&self.cid)
    }

    /// Whether a field is present (even as null).
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// Whether a field is present and not null.
    pub fn present(&self, name: &str) -> bool {
        self.fields.get(name).is_some_and(|v| !v.is_null())
    }

    /// An optional string (null = absent); other types → 400.
    pub fn opt_str(&self, name: &str) -> Field<Option<String>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad()),
        }
    }

    /// A required string: missing → 400; null is passed on as `""`.
    pub fn req_str(&self, name: &str) -> Field<String> {
        match self.fields.get(name) {
            None => Err(self.bad()),
            Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.bad()),
        }
    }

    /// A string where null means "set to null": `None` absent, `Some(None)` null.
    pub fn nullable_str(&self, name: &str) -> Field<Option<Option<String>>> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(self.bad()),
        }
    }

    /// A boolean where null means "set to null".
    pub fn nullable_bool(&self, name: &str) -> Field<Option<Option<bool>>> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => as_bool(v).map(|b| Some(Some(b))).ok_or_else(|| self.bad()),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Field<Option<bool>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_bool(v).map(Some).ok_or_else(|| self.bad()),
        }
    }

    /// An optional integer.
    pub fn opt_int(&self, name: &str) -> Field<Option<i64>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_int(v).map(Some).ok_or_else(|| self.bad()),
        }
    }

    /// An optional list of strings.
    pub fn opt_str_list(&self, name: &str) -> Field<Option<Vec<String>>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| self.bad()))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.bad()),
        }
    }

    /// The endpoint's UST field (`ust` or `current_ust`), from the body or the Bearer header;
    /// both present and different → 400; missing → 400.
    pub fn ust(&self, name: &str) -> Field<String> {
        let body = self.opt_str(name)?;
        match (body, &self.bearer) {
            (Some(b), Some(h)) if &b != h => Err(self.bad()),
            (Some(b), _) => Ok(b),
            (None, Some(h)) => Ok(h.clone()),
            (None, None) if self.has(name) => Ok(String::new()),
            (None, None) => Err(self.bad()),
        }
    }

    /// `current_app` from the body, else the header; missing → 400.
    pub fn current_app(&self) -> Field<String> {
        match self.opt_str("current_app")? {
            Some(a) => Ok(a),
            None => self.app_header.clone().ok_or_else(|| self.bad()),
        }
    }

    /// The call context (no UST).
    pub fn ctx(&self) -> Field<CallCtx> {
        let app = self.current_app()?;
        let cid = Cid::parse(&self.cid).unwrap_or_else(Cid::generate);
        let mut ctx = CallCtx::new(cid, app, self.remote.clone());
        if let Some(ua) = &self.user_agent {
            ctx = ctx.with_user_agent(ua);
        }
        Ok(ctx)
    }

    /// The call context carrying the endpoint's UST.
    pub fn ctx_with(&self, ust_field: &str) -> Field<CallCtx> {
        let ust = self.ust(ust_field)?;
        Ok(self.ctx()?.with_ust(sso_core::secret::Ust::new(ust)))
    }

    /// Refuses unknown fields in strict mode (`http.reject_unknown_fields`).
    pub fn check_known(&self, strict: bool, known: &[&str]) -> Field<()> {
        if strict && self.fields.keys().any(|k| k != "current_app" && !known.contains(&k.as_str())) {
            return Err(self.bad());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let m = parse_query("a=1&b=x%20y+z&c=").unwrap();
        assert_eq!(m["b"], "x y z");
        assert_eq!(m["c"], "");
        assert!(parse_query("a=1&a=2").is_err());
        assert!(parse_query("a=%zz").is_err());
    }

    #[test]
    fn lenient_scalars() {
        assert_eq!(as_bool(&Value::from("Yes")), Some(true));
        assert_eq!(as_bool(&Value::from(0)), Some(false));
        assert_eq!(as_bool(&Value::from(2)), None);
        assert_eq!(as_int(&Value::from("42")), Some(42));
        assert_eq!(as_int(&Value::from(true)), None);
    }
}
