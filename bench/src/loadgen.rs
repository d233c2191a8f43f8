//! The HTTP load generator: `conns` HTTP/1.1 keep-alive connections to a loopback address (tokio
//! and the hyper 1 client), each a task sending requests back to back. All connections are opened
//! first; then a warm-up, then the timed window. A request counts when it completes inside the
//! window: req/s is their number over the window, p50/p99 are their latencies. Every request is
//! bounded by a 10 s timeout, and the run by the window plus that timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One load run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Where.
    pub addr: SocketAddr,
    /// Method of every request.
    pub method: Method,
    /// Path (and query) of every request.
    pub path: String,
    /// Request bodies: connection `i` sends `bodies[i % len]` (JSON).
    pub bodies: Vec<Bytes>,
    /// Concurrent connections.
    pub conns: usize,
    /// Untimed warm-up after all connections are open.
    pub warmup: Duration,
    /// The timed window.
    pub window: Duration,
}

impl Load {
    /// The load generator's parameters, as written into the reports.
    pub fn describe(&self) -> String {
        format!(
            "sso-bench load generator: {} {} on {} HTTP/1.1 keep-alive connections to 127.0.0.1 (loopback), requests back to back, {:.1} s warm-up + {:.0} s timed",
            self.method,
            self.path,
            self.conns,
            self.warmup.as_secs_f64(),
            self.window.as_secs_f64()
        )
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Latencies of the 2xx responses completed in the window.
    pub lat: Vec<Duration>,
    /// Non-2xx responses, timeouts and connection errors in the window.
    pub errors: u64,
    /// The window.
    pub window: Duration,
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(method: &Method, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
    Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, "127.0.0.1")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())
}

/// One request on a fresh connection: (status, body text).
pub async fn once(addr: SocketAddr, method: Method, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = connect(addr).await?;
    let req = request(&method, path, Bytes::from(body.to_owned()))?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, s.send_request(req))
        .await
        .map_err(|_| format!("{method} {path}: timeout"))?
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Sends one request and reads the whole response; `Ok(true)` for a 2xx.
async fn send(s: &mut Sender, req: Request<Full<Bytes>>) -> Result<bool, String> {
    s.ready().await.map_err(|e| e.to_string())?;
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let ok = resp.status().is_success();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(ok)
}

/// Runs the load.
pub async fn run(load: &Load) -> Result<Outcome, String> {
    let mut senders = Vec::with_capacity(load.conns);
    for _ in 0..load.conns {
        senders.push(connect(load.addr).await?);
    }
    let from = Instant::now() + load.warmup;
    let until = from + load.window;
    let mut tasks = Vec::with_capacity(load.conns);
    for (i, mut s) in senders.into_iter().enumerate() {
        let body = if load.bodies.is_empty() {
            Bytes::new()
        } else {
            load.bodies.get(i % load.bodies.len()).cloned().unwrap_or_default()
        };
        let (method, path) = (load.method.clone(), load.path.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(16_384);
            let mut errors = 0u64;
            loop {
                let start = Instant::now();
                if start >= until {
                    break;
                }
                let req = request(&method, &path, body.clone())?;
                let r = tokio::time::timeout(REQUEST_TIMEOUT, send(&mut s, req)).await;
                let end = Instant::now();
                let in_window = end >= from && end <= until;
                match r {
                    Ok(Ok(true)) if in_window => lat.push(end - start),
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => errors += u64::from(in_window),
                    // A broken or stuck connection ends this connection's part of the run.
                    Ok(Err(_)) | Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            Ok::<_, String>((lat, errors))
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())??;
        lat.extend(l);
        errors += e;
    }
    Ok(Outcome { lat, errors, window: load.window })
}
