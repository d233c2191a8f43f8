//! The `stdout` sink.

use async_trait::async_trait;
use sso_core::audit::{AuditError, AuditRecord, AuditSink};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// One JSON object per line on standard output. Application logs go to standard error, so the two
/// never interleave.
#[derive(Debug)]
pub struct StdoutSink {
    required: bool,
    out: Mutex<tokio::io::Stdout>,
}

impl StdoutSink {
    /// A sink; `required` per `audit.stdout.required` (default false).
    pub fn new(required: bool) -> Self {
        StdoutSink { required, out: Mutex::new(tokio::io::stdout()) }
    }
}

#[async_trait]
impl AuditSink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn required(&self) -> bool {
        self.required
    }

    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.write_many(std::slice::from_ref(record)).await
    }

    async fn write_many(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let text = AuditRecord::json_lines(records);
        let mut out = self.out.lock().await;
        let r = async {
            out.write_all(&text).await?;
            out.flush().await
        }
        .await;
        r.map_err(|e| AuditError { sink: "stdout".into(), detail: e.to_string() })
    }
}
