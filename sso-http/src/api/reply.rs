//! Responses (spec/rest.md §2): the `{cid, status, sub_status, …}` envelope for 200/403/429 and
//! the plain `{"result": "Error", "cid", "details"}` body for everything else. Null fields are
//! omitted; no internal detail ever leaves.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use sso_core::{Code, SsoError};

/// A response under construction.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Map<String, Value>,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

fn strip_nulls(m: &mut Map<String, Value>) {
    m.retain(|_, v| !v.is_null());
}

impl Reply {
    /// 200 `ok` with `fields`.
    pub fn ok(cid: &str, fields: Map<String, Value>) -> Reply {
        Self::envelope(StatusCode::OK, cid, "ok", &[], fields)
    }

    /// 200 `ok` with no fields.
    pub fn done(cid: &str) -> Reply {
        Self::ok(cid, Map::new())
    }

    /// 200 `warning` with the code.
    pub fn warning(cid: &str, code: Code, fields: Map<String, Value>) -> Reply {
        Self::envelope(StatusCode::OK, cid, "warning", &[code], fields)
    }

    fn envelope(status: StatusCode, cid: &str, s: &str, codes: &[Code], mut fields: Map<String, Value>) -> Reply {
        strip_nulls(&mut fields);
        let mut body = Map::new();
        body.insert("cid".into(), Value::from(cid));
        body.insert("status".into(), Value::from(s));
        if !codes.is_empty() {
            body.insert("sub_status".into(), Value::from(codes.iter().map(|c| c.as_str()).collect::<Vec<_>>()));
        }
        for (k, v) in fields {
            body.entry(k).or_insert(v);
        }
        Reply { status, body, headers: Vec::new() }
    }

    /// A plain error body.
    pub fn plain(status: StatusCode, cid: &str) -> Reply {
        let details = match status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            _ => "Internal error",
        };
        let mut body = Map::new();
        body.insert("result".into(), Value::from("Error"));
        body.insert("cid".into(), Value::from(cid));
        body.insert("details".into(), Value::from(details));
        let mut r = Reply { status, body, headers: Vec::new() };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers.push((axum::http::header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        r
    }

    /// 400 `Bad request`.
    pub fn bad_request(cid: &str) -> Reply {
        Self::plain(StatusCode::BAD_REQUEST, cid)
    }

    /// Maps an operation's error. `unauthenticated`: the endpoint shows hidden codes as `E005001`.
    pub fn error(cid: &str, e: &SsoError, unauthenticated: bool) -> Reply {
        match e {
            SsoError::Validation { .. } => {
                let code = if unauthenticated { e.unauthenticated_code() } else { e.real_code() };
                Self::envelope(StatusCode::FORBIDDEN, cid, "error", &[code], Map::new())
            }
            SsoError::Throttled { retry_after } => {
                let mut r = Self::envelope(StatusCode::TOO_MANY_REQUESTS, cid, "error", &[Code::E005001], Map::new());
                let secs = retry_after.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    r.headers.push((axum::http::header::RETRY_AFTER, v));
                }
                r
            }
            SsoError::BadInput { .. } => Self::bad_request(cid),
            SsoError::Unavailable { .. } => Self::plain(StatusCode::SERVICE_UNAVAILABLE, cid),
            SsoError::Internal { .. } => Self::plain(StatusCode::INTERNAL_SERVER_ERROR, cid),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// The headers every response under the prefix carries.
pub fn common_headers(h: &mut HeaderMap, cid: &str) {
    if let Ok(v) = HeaderValue::from_str(cid) {
        h.insert(HeaderName::from_static("x-zato-cid"), v);
    }
    h.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let cid = self.body.get("cid").and_then(Value::as_str).unwrap_or("").to_owned();
        let mut resp = (self.status, axum::Json(Value::Object(self.body))).into_response();
        let h = resp.headers_mut();
        common_headers(h, &cid);
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        resp
    }
}
