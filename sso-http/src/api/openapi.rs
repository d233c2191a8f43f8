//! The OpenAPI 3.1 document, generated from the same route table as the router.

use serde_json::{Map, Value, json};

use super::input::SECRET_FIELDS;
use super::routes;

fn envelope(fields: &[&str]) -> Value {
    let mut props = Map::new();
    props.insert("cid".into(), json!({"type": "string"}));
    props.insert("status".into(), json!({"type": "string", "enum": ["ok", "warning", "error"]}));
    props.insert("sub_status".into(), json!({"type": "array", "items": {"type": "string"}}));
    for f in fields {
        props.insert((*f).into(), json!({}));
    }
    json!({"type": "object", "required": ["cid", "status"], "properties": props})
}

fn plain_error() -> Value {
    json!({"type": "object", "required": ["result", "cid", "details"], "properties": {
        "result": {"type": "string", "const": "Error"},
        "cid": {"type": "string"},
        "details": {"type": "string", "enum": ["Bad request", "Not found", "Method not allowed", "Payload too large", "Internal error", "Service unavailable"]}
    }})
}

/// The document for `prefix`.
pub fn document(prefix: &str) -> Value {
    let prefix = prefix.trim_end_matches('/');
    let mut paths = Map::new();
    for r in routes() {
        let mut item = Map::new();
        for m in r.methods {
            let mut props = Map::new();
            props.insert("current_app".into(), json!({"type": "string"}));
            for f in r.fields {
                let mut schema = json!({});
                if SECRET_FIELDS.contains(f) {
                    schema = json!({"type": "string", "writeOnly": true});
                }
                props.insert((*f).into(), schema);
            }
            let op = json!({
                "summary": r.summary,
                "operationId": format!("{}{}", m.as_str().to_lowercase(), r.path.replace('/', "_")),
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": props}}}},
                "responses": {
                    "200": {"description": "ok or warning", "content": {"application/json": {"schema": envelope(r.response)}}},
                    "403": {"description": "refused by an SSO rule", "content": {"application/json": {"schema": envelope(&[])}}},
                    "429": {"description": "throttled (Retry-After)", "content": {"application/json": {"schema": envelope(&[])}}},
                    "400": {"description": "bad request", "content": {"application/json": {"schema": plain_error()}}},
                    "413": {"description": "payload too large", "content": {"application/json": {"schema": plain_error()}}},
                    "500": {"description": "internal error", "content": {"application/json": {"schema": plain_error()}}},
                    "503": {"description": "service unavailable", "content": {"application/json": {"schema": plain_error()}}}
                }
            });
            item.insert(m.as_str().to_lowercase(), op);
        }
        paths.insert(format!("{prefix}{}", r.path), Value::Object(item));
    }
    for (p, summary) in
        [("/health", "Health of every backend"), ("/metrics", "Prometheus metrics"), ("/openapi.json", "This document")]
    {
        paths.insert(p.into(), json!({"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "sso", "version": env!("CARGO_PKG_VERSION"), "description": "Zato-compatible single sign-on API"},
        "paths": paths,
    })
}
