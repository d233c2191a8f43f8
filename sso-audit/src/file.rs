//! The `file` sink: JSON lines, mode 0600, size-based rotation, `fsync` policy. With `fsync`,
//! concurrent writers are batched: whoever holds the lock writes every pending line and syncs
//! once on the blocking pool, then all of them are acknowledged. Without it, each writer appends
//! its lines itself, under the lock (see `append`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sso_core::audit::{AuditError, AuditPage, AuditQuery, AuditRecord, AuditSink, page_of};
use sso_core::time::Timestamp;
use tokio::sync::{Mutex, oneshot};

/// Settings of the file sink (`[audit.file]`).
#[derive(Debug, Clone)]
pub struct FileSinkOptions {
    /// File path.
    pub path: PathBuf,
    /// Rotate when the file grows beyond this many bytes.
    pub max_size_bytes: u64,
    /// Rotated files kept.
    pub max_files: u32,
    /// `fdatasync` before acknowledging.
    pub fsync: bool,
    /// Whether a failure fails state-changing operations.
    pub required: bool,
}

/// Answers a writer once its lines are written (or why not).
type Ack = oneshot::Sender<Result<(), String>>;

struct State {
    file: Option<std::fs::File>,
    size: u64,
    /// Texts waiting for the writer (each one or more whole lines) and their writers' acks.
    pending: Vec<(Vec<u8>, Ack)>,
    writing: bool,
}

/// JSON lines in a rotated file.
pub struct FileSink {
    opts: FileSinkOptions,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").field("path", &self.opts.path).finish_non_exhaustive()
    }
}

fn open(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl FileSink {
    /// Writes `text` (whole lines, each ending in `\n`) and returns once it is written (and
    /// synced, per `fsync`).
    ///
    /// With `fsync`, whoever finds no writer at work becomes it: one hop to the blocking pool
    /// drains every pending text, one write and one sync per batch, until nothing is left.
    ///
    /// Without it, the text is written right here, under the lock: an append to the page cache
    /// takes microseconds, like the SQLite fast reads (so does a rotation when the file is full:
    /// a few renames and an open), and the hop to the blocking pool (a task,
    /// a thread wake-up and a context switch each way) cost more than the write itself — ≈ 5 %
    /// of the server's CPU under a session-verify load, where every verify's read record comes
    /// through here. The price: a kernel that throttles dirty pages (a saturated disk) stalls
    /// this worker thread instead of a blocking-pool thread; operators who want each record on
    /// disk before the answer set `fsync`, which keeps the hop.
    async fn append(&self, text: Vec<u8>) -> Result<(), AuditError> {
        let err = |d: String| AuditError { sink: "file".into(), detail: d };
        if !self.opts.fsync {
            let mut st = self.state.lock().await;
            return FileSink::write_batch(&self.opts, &mut st, std::slice::from_ref(&text))
                .map_err(|e| err(e.to_string()));
        }
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut st = self.state.lock().await;
            st.pending.push((text, tx));
            if st.writing {
                false
            } else {
                st.writing = true;
                true
            }
        };
        if lead {
            let state = self.state.clone();
            let opts = self.opts.clone();
            tokio::task::spawn_blocking(move || {
                loop {
                    let mut st = state.blocking_lock();
                    let batch = std::mem::take(&mut st.pending);
                    if batch.is_empty() {
                        st.writing = false;
                        return;
                    }
                    let (texts, acks): (Vec<Vec<u8>>, Vec<Ack>) = batch.into_iter().unzip();
                    let r = FileSink::write_batch(&opts, &mut st, &texts).map_err(|e| e.to_string());
                    // Released before the acknowledgements, so new lines queue meanwhile.
                    drop(st);
                    for ack in acks {
                        let _ = ack.send(r.clone());
                    }
                }
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        }
        rx.await.map_err(|e| err(e.to_string()))?.map_err(err)
    }

    /// Opens (creating with mode 0600) the file.
    pub fn open(opts: FileSinkOptions) -> std::io::Result<FileSink> {
        let (file, size) = open(&opts.path)?;
        Ok(FileSink {
            opts,
            state: Arc::new(Mutex::new(State { file: Some(file), size, pending: Vec::new(), writing: false })),
        })
    }

    fn rotate(opts: &FileSinkOptions, st: &mut State) -> std::io::Result<()> {
        st.file = None;
        let max = opts.max_files.max(1);
        let _ = std::fs::remove_file(rotated(&opts.path, max));
        for n in (1..max).rev() {
            let from = rotated(&opts.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&opts.path, n + 1))?;
            }
        }
        std::fs::rename(&opts.path, rotated(&opts.path, 1))?;
        let (f, size) = open(&opts.path)?;
        st.file = Some(f);
        st.size = size;
        Ok(())
    }

    /// Writes a batch of texts (blocking I/O: on the blocking pool with `fsync`, else inline).
    fn write_batch(opts: &FileSinkOptions, st: &mut State, texts: &[Vec<u8>]) -> std::io::Result<()> {
        if st.file.is_none() {
            let (f, size) = open(&opts.path)?;
            st.file = Some(f);
            st.size = size;
        }
        let joined;
        let buf = match texts {
            [one] => one,
            _ => {
                joined = texts.concat();
                &joined
            }
        };
        if st.size > 0 && st.size + buf.len() as u64 > opts.max_size_bytes {
            Self::rotate(opts, st)?;
        }
        let file = st.file.as_mut().ok_or_else(|| std::io::Error::other("audit file not open"))?;
        file.write_all(buf)?;
        if opts.fsync {
            file.sync_data()?;
        }
        st.size += buf.len() as u64;
        Ok(())
    }

    fn all_records(&self) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let mut paths = vec![self.opts.path.clone()];
        for n in 1..=self.opts.max_files {
            paths.push(rotated(&self.opts.path, n));
        }
        for p in paths {
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.extend(text.lines().filter_map(AuditRecord::from_json_line));
            }
        }
        out
    }
}

#[async_trait]
impl AuditSink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn required(&self) -> bool {
        self.opts.required
    }

    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.write_many(std::slice::from_ref(record)).await
    }

    async fn write_many(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        self.append(AuditRecord::json_lines(records)).await
    }

    async fn query(&self, q: &AuditQuery) -> Result<Option<AuditPage>, AuditError> {
        Ok(Some(page_of(self.all_records(), q)))
    }

    async fn purge_before(&self, _ts: Timestamp) -> Result<u64, AuditError> {
        // Files keep `max_files` rotations; retention by age applies to SQL sinks.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sso_core::audit::Outcome;

    fn rec(i: u32) -> AuditRecord {
        AuditRecord {
            id: format!("01J{i:023}"),
            ts: "2026-11-27T10:15:30.123456Z".into(),
            node: "n".into(),
            cid: format!("cid{i}"),
            op: "user.login".into(),
            outcome: Outcome::Success,
            status: "ok".into(),
            sub_status: vec![],
            reason: None,
            actor: "anonymous".into(),
            actor_session_id: None,
            target_user_id: None,
            target_session_id: None,
            current_app: "CRM\r\n\u{2028}\u{1b}[31m".into(),
            remote_addr: "127.0.0.1".into(),
            user_agent: None,
            details: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_rotate_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = Arc::new(
            FileSink::open(FileSinkOptions {
                path: path.clone(),
                max_size_bytes: 4096,
                max_files: 10,
                fsync: true,
                required: true,
            })
            .unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = sink.clone();
            tasks.push(tokio::spawn(async move { s.write(&rec(i)).await.unwrap() }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The 40 may have gone out as one batch into the empty file (a batch is never split);
        // the next write then finds the file over 4 KiB and rotates it.
        sink.write(&rec(40)).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(rotated(&path, 1).exists(), "rotated at 4 KiB");
        for l in std::fs::read_to_string(&path).unwrap().lines() {
            assert!(AuditRecord::from_json_line(l).is_some(), "each line decodes: {l}");
        }
        let page = sink
            .query(&AuditQuery { cid: Some("cid39".into()), limit: 10, ..Default::default() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.records.len(), 1);
        let all = sink.query(&AuditQuery { limit: 1000, ..Default::default() }).await.unwrap().unwrap();
        assert_eq!(all.records.len(), 41, "nothing lost across rotations");
    }

    /// A batch (the read-audit writer's) lands as consecutive lines in its order.
    #[tokio::test]
    async fn write_many_appends_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let opts =
            FileSinkOptions { path: path.clone(), max_size_bytes: 1 << 20, max_files: 2, fsync: false, required: true };
        let sink = FileSink::open(opts).unwrap();
        sink.write(&rec(0)).await.unwrap();
        sink.write_many(&(1..6).map(rec).collect::<Vec<_>>()).await.unwrap();
        sink.write_many(&[]).await.unwrap();
        let cids: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| AuditRecord::from_json_line(l).unwrap().cid)
            .collect();
        assert_eq!(cids, (0..6).map(|i| format!("cid{i}")).collect::<Vec<_>>());
    }
}
