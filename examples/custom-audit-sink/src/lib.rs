//! # sso-example-custom-audit-sink
//!
//! Audit sinks written the way an embedder writes one: in its own crate, against nothing but
//! `sso-core`'s public [`AuditSink`] trait (spec/audit.md §4: "Embedders add sinks by implementing
//! `AuditSink`").
//!
//! * [`ChannelSink`] forwards every record, as its JSON line ([`AuditRecord::to_json_line`]), into a
//!   **bounded** [`tokio::sync::mpsc`] channel. The receiving half is yours: ship the lines to a
//!   SIEM, a message broker, a second database.
//! * [`SyslogSink`] (Unix only) sends every record as one RFC 5424-style datagram to a Unix datagram
//!   socket such as `/dev/log` or a log shipper's socket.
//!
//! Both have a configurable [`required`](AuditSink::required) flag (default `true`, as the built-in
//! `file`, `sql` and `redis` sinks):
//!
//! * **required** — with `audit.on_failure = "fail"` (the default), a state-changing operation whose
//!   record this sink cannot take is answered `SsoError::Unavailable { backend: "audit" }` and
//!   changes nothing (spec/audit.md §2, G2);
//! * **optional** — a failure is logged and counted (`sso_audit_failures_total`), the operation
//!   proceeds. `audit.on_failure = "log"` treats every sink as optional.
//!
//! ## Plugging a sink in
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use sso_core::Sso;
//! use sso_core::config::Config;
//! use sso_example_custom_audit_sink::ChannelSink;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // A channel of 1 024 records; the sink is required (the default).
//! let (sink, mut records) = ChannelSink::new(1024);
//! let sso = Sso::builder(Config::default(), sso_core::memory::stores())
//!     .audit_sink(Arc::new(sink.with_name("siem")))
//!     .build()
//!     .await?;
//!
//! // Drain the channel: each item is one JSON object, no secret in it.
//! tokio::spawn(async move {
//!     while let Some(line) = records.recv().await {
//!         let _ = line; // forward it
//!     }
//! });
//! # let _ = sso;
//! # Ok(())
//! # }
//! ```
//!
//! A sink added with [`SsoBuilder::audit_sink`](sso_core::SsoBuilder::audit_sink) is used in
//! addition to any other sink added the same way, in the order they were added. Do not name a sink
//! `sql`: that name marks the sink that shares the users database and is written inside its
//! transaction.
//!
//! ## What "acknowledged" means here
//!
//! The core waits for [`AuditSink::write`] before it reports success. For [`ChannelSink`] that is the
//! moment the channel **accepted** the line — not the moment your consumer stored it. If the consumer
//! must persist a record before the operation may succeed, make `write` wait for the consumer's
//! acknowledgement (for example send a `tokio::sync::oneshot::Sender` along with the line). For
//! [`SyslogSink`] it is the moment the kernel accepted the datagram.

use std::time::Duration;

use async_trait::async_trait;
use sso_core::audit::{AuditError, AuditRecord, AuditSink};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

#[cfg(unix)]
pub use syslog::{AUTHPRIV, SyslogSink};

/// Forwards each audit record, as its JSON line, into a bounded [`mpsc`] channel.
///
/// By default a full or closed channel fails the write at once (`try_send`), so an operation never
/// waits on a slow consumer; [`ChannelSink::with_send_timeout`] lets it wait up to a bound instead.
#[derive(Debug, Clone)]
pub struct ChannelSink {
    name: String,
    tx: mpsc::Sender<String>,
    required: bool,
    send_timeout: Option<Duration>,
}

impl ChannelSink {
    /// A required sink named `channel` over a new channel of `capacity` lines (at least 1), and the
    /// receiving half.
    pub fn new(capacity: usize) -> (ChannelSink, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ChannelSink::from_sender(tx), rx)
    }

    /// A required sink named `channel` over an existing sender.
    pub fn from_sender(tx: mpsc::Sender<String>) -> ChannelSink {
        ChannelSink { name: "channel".to_owned(), tx, required: true, send_timeout: None }
    }

    /// Sets whether a failure of this sink fails state-changing operations (default `true`).
    pub fn with_required(mut self, required: bool) -> ChannelSink {
        self.required = required;
        self
    }

    /// Sets the sink's name, used in logs and metrics and by `audit.query_sink` (default `channel`).
    pub fn with_name(mut self, name: impl Into<String>) -> ChannelSink {
        self.name = name.into();
        self
    }

    /// Waits up to `timeout` for room in a full channel instead of failing at once.
    pub fn with_send_timeout(mut self, timeout: Duration) -> ChannelSink {
        self.send_timeout = Some(timeout);
        self
    }

    fn error(&self, detail: &str) -> AuditError {
        AuditError { sink: self.name.clone(), detail: detail.to_owned() }
    }
}

#[async_trait]
impl AuditSink for ChannelSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn required(&self) -> bool {
        self.required
    }

    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let line = record.to_json_line();
        match self.send_timeout {
            None => self.tx.try_send(line).map_err(|e| match e {
                TrySendError::Full(_) => self.error("channel full"),
                TrySendError::Closed(_) => self.error("channel closed"),
            }),
            Some(t) => match tokio::time::timeout(t, self.tx.send(line)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(self.error("channel closed")),
                Err(_) => Err(self.error("channel full (send timed out)")),
            },
        }
    }
}

#[cfg(unix)]
mod syslog {
    use std::path::{Path, PathBuf};

    use async_trait::async_trait;
    use sso_core::audit::{AuditError, AuditRecord, AuditSink, Outcome};
    use tokio::net::UnixDatagram;
    use tokio::sync::OnceCell;

    /// The syslog facility `authpriv` (10): security and authorisation messages.
    pub const AUTHPRIV: u8 = 10;

    /// Sends each audit record as one RFC 5424-style datagram to a Unix datagram socket.
    ///
    /// The datagram is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG`, where `PRI` is
    /// `facility × 8 + severity` (severity `info` for `success`, `notice` for `denied`, `warning`
    /// for `failure`), `TIMESTAMP` the record's `ts`, `HOSTNAME` its `node`, `MSGID` its `op`, no
    /// structured data, and `MSG` the UTF-8 byte-order mark followed by the record's JSON line.
    /// Header fields are reduced to printable ASCII without spaces (`-` when empty).
    #[derive(Debug)]
    pub struct SyslogSink {
        path: PathBuf,
        app_name: String,
        facility: u8,
        required: bool,
        socket: OnceCell<UnixDatagram>,
    }

    impl SyslogSink {
        /// A required sink sending to the socket at `path`, as app `sso`, facility `authpriv`.
        pub fn new(path: impl AsRef<Path>) -> SyslogSink {
            SyslogSink {
                path: path.as_ref().to_path_buf(),
                app_name: "sso".to_owned(),
                facility: AUTHPRIV,
                required: true,
                socket: OnceCell::new(),
            }
        }

        /// Sets whether a failure of this sink fails state-changing operations (default `true`).
        pub fn with_required(mut self, required: bool) -> SyslogSink {
            self.required = required;
            self
        }

        /// Sets the APP-NAME header field (default `sso`; at most 48 characters are kept).
        pub fn with_app_name(mut self, app_name: impl Into<String>) -> SyslogSink {
            self.app_name = app_name.into();
            self
        }

        /// Sets the facility (0..=23; larger values are capped at 23, `local7`).
        pub fn with_facility(mut self, facility: u8) -> SyslogSink {
            self.facility = facility.min(23);
            self
        }

        /// The datagram for `record`.
        pub fn format(&self, record: &AuditRecord) -> String {
            let severity = match record.outcome {
                Outcome::Success => 6,
                Outcome::Denied => 5,
                Outcome::Failure => 4,
            };
            let pri = u16::from(self.facility) * 8 + severity;
            format!(
                "<{pri}>1 {} {} {} {} {} - \u{FEFF}{}",
                header_field(&record.ts, 64),
                header_field(&record.node, 255),
                header_field(&self.app_name, 48),
                std::process::id(),
                header_field(&record.op, 32),
                record.to_json_line(),
            )
        }

        fn error(&self, detail: String) -> AuditError {
            AuditError { sink: "syslog".to_owned(), detail }
        }
    }

    /// RFC 5424 header fields are 1..=`max` printable US-ASCII characters (no space); `-` = nil.
    fn header_field(value: &str, max: usize) -> String {
        let s: String = value.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
        if s.is_empty() { "-".to_owned() } else { s }
    }

    #[async_trait]
    impl AuditSink for SyslogSink {
        fn name(&self) -> &str {
            "syslog"
        }

        fn required(&self) -> bool {
            self.required
        }

        async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
            let socket = self
                .socket
                .get_or_try_init(|| async { UnixDatagram::unbound() })
                .await
                .map_err(|e| self.error(format!("socket: {e}")))?;
            let datagram = self.format(record);
            let sent = socket
                .send_to(datagram.as_bytes(), &self.path)
                .await
                .map_err(|e| self.error(format!("send to {}: {e}", self.path.display())))?;
            if sent == datagram.len() { Ok(()) } else { Err(self.error("datagram truncated".to_owned())) }
        }
    }
}
