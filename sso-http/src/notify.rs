//! The `[notify]` webhook (spec/config.md): events are queued (never delaying an operation) and
//! `POST`ed as JSON with `X-SSO-Signature: sha256=<hex HMAC-SHA256(webhook_secret, body)>`,
//! retried with backoff. Only the `password_reset` event carries a secret (the token).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sso_core::config::NotifyConfig;
use sso_core::crypto::digest;
use sso_core::secret::SecretStr;
use sso_core::service::notify::{Event, Notifier};
use tokio::sync::mpsc;

/// Queues events for the webhook worker.
#[derive(Debug)]
pub struct WebhookNotifier {
    tx: mpsc::Sender<Event>,
    events: Vec<String>,
}

/// The JSON body of an event.
pub fn body(e: &Event, site_name: &str) -> Value {
    let mut v = json!({
        "event": e.kind.as_str(),
        "ts": e.ts.to_rfc3339_micros(),
        "cid": e.cid,
        "site_name": site_name,
        "current_app": e.current_app,
        "remote_addr": e.remote_addr,
        "user_id": e.user_id.as_str(),
        "username": e.username,
        "email": e.email,
    });
    if let Value::Object(m) = &mut v {
        if let Some(a) = &e.actor {
            m.insert("actor".into(), Value::from(a.as_str()));
        }
        if let Some(t) = &e.token {
            m.insert("token".into(), Value::from(t.expose()));
        }
        if let Some(x) = e.expiration_time {
            m.insert("expiration_time".into(), Value::from(x.to_zato()));
        }
    }
    v
}

struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Option<Target> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 80),
    };
    Some(Target { host: host.to_owned(), port, path: path.to_owned() })
}

async fn post(t: &Target, body: Bytes, signature: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(t.path.as_str())
        .header("host", format!("{}:{}", t.host, t.port))
        .header("content-type", "application/json")
        .header("x-sso-signature", signature)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

impl WebhookNotifier {
    /// Starts the worker (call inside a Tokio runtime). `None` when no webhook is configured.
    /// Only `http://` URLs are delivered by this build; others are refused at start-up.
    pub fn start(cfg: &NotifyConfig) -> Result<Option<WebhookNotifier>, String> {
        if cfg.webhook_url.is_empty() {
            return Ok(None);
        }
        let target =
            parse_url(&cfg.webhook_url).ok_or("only http://host[:port]/path webhooks are supported by this build")?;
        let (tx, mut rx) = mpsc::channel::<Event>(1000);
        let secret = cfg.webhook_secret.clone();
        let site = cfg.site_name.clone();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let retries = cfg.retries;
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let text = body(&e, &site).to_string();
                let sig = format!("sha256={}", digest::hex(&digest::hmac_sha256(secret.as_bytes(), text.as_bytes())));
                let bytes = Bytes::from(text);
                let mut delay = Duration::from_millis(500);
                for attempt in 0..=retries {
                    match tokio::time::timeout(timeout, post(&target, bytes.clone(), &sig)).await {
                        Ok(Ok(s)) if (200..300).contains(&s) => break,
                        Ok(Ok(s)) => {
                            tracing::warn!(status = s, attempt, event = e.kind.as_str(), "webhook refused the event")
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(error = %err, attempt, event = e.kind.as_str(), "webhook delivery failed")
                        }
                        Err(_) => tracing::warn!(attempt, event = e.kind.as_str(), "webhook delivery timed out"),
                    }
                    if attempt < retries {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        Ok(Some(WebhookNotifier { tx, events: cfg.events.clone() }))
    }
}

impl Notifier for WebhookNotifier {
    fn notify(&self, event: Event) {
        if !self.events.iter().any(|e| e == event.kind.as_str()) {
            return;
        }
        if self.tx.try_send(event).is_err() {
            tracing::warn!("webhook queue full; event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:9000/hooks/sso").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 9000, "/hooks/sso"));
        assert!(parse_url("https://x").is_none());
    }
}
