//! `sso serve`: compose the deployment, run the background cleanup, serve HTTP until SIGTERM or
//! SIGINT (letting in-flight requests finish within `server.shutdown_grace_s`), reload the key ring
//! on SIGHUP, close the pools.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sso_core::config::{Config, ConfigError};
use tokio::sync::Notify;

use crate::api::{self, App};
use crate::wiring::{self, WireError};

/// Checks the listen address rules (spec/security.md item 81).
pub fn check_listen(cfg: &Config) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr =
        cfg.server.listen.parse().map_err(|_| {
            ConfigError::new("server.listen", format!("{:?} is not an address:port", cfg.server.listen))
        })?;
    if !cfg.server.tls_cert_file.is_empty() {
        return Err(ConfigError::new(
            "server.tls_cert_file",
            "TLS termination is not built into this version; terminate TLS in a proxy and set server.behind_tls_proxy",
        ));
    }
    if !addr.ip().is_loopback() && !cfg.server.behind_tls_proxy {
        return Err(ConfigError::new(
            "server.listen",
            "a non-loopback address without TLS needs server.behind_tls_proxy = true",
        ));
    }
    Ok(addr)
}

async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Runs the server until a termination signal.
pub async fn serve(cfg: Config) -> Result<(), WireError> {
    let addr = check_listen(&cfg)?;
    let migrate = cfg.store.migrate_on_start;
    let deployment = wiring::deploy(cfg, migrate, wiring::Role::Server).await?;
    let sso = deployment.sso.clone();
    let cfg = deployment.cfg.clone();

    if cfg.server.cleanup_interval_s > 0 {
        let sso = sso.clone();
        let every = Duration::from_secs(cfg.server.cleanup_interval_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match sso.cleanup().await {
                    Ok(n) => tracing::debug!(removed = n, "cleanup pass"),
                    Err(e) => tracing::warn!(error = %e, "cleanup pass failed"),
                }
            }
        });
    }

    #[cfg(unix)]
    if cfg.crypto.key_ring_inline.is_empty() {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let sso = sso.clone();
            let path = cfg.crypto.key_ring_file.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match wiring::read_key_ring(std::path::Path::new(&path)) {
                        Ok(ring) => {
                            sso.replace_key_ring(ring);
                            tracing::info!("key ring reloaded");
                        }
                        Err(e) => tracing::error!(error = %e, "key ring reload failed; keeping the current ring"),
                    }
                }
            });
        }
    }

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| WireError::Unavailable(format!("server.listen: cannot bind {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| WireError::Internal(e.to_string()))?;
    tracing::info!(listen = %local, prefix = %cfg.http.prefix, "sso serving");
    eprintln!("sso listening on http://{local}{}", cfg.http.prefix);

    let for_shutdown = sso.clone();
    let router = api::router(App::new(sso));
    let stop = Arc::new(Notify::new());
    let stop2 = stop.clone();
    let server = api::serve(listener, router, async move { stop2.notified().await });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(|e| WireError::Internal(e.to_string()))?,
        _ = terminate() => {
            tracing::info!("shutting down: finishing in-flight requests");
            stop.notify_one();
            let grace = Duration::from_secs(cfg.server.shutdown_grace_s);
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                tracing::warn!("shutdown grace period over; dropping remaining connections");
            }
        }
    }
    // Queued read records (spec/audit.md G5) reach the sinks before the stores close.
    if tokio::time::timeout(Duration::from_secs(5), for_shutdown.flush_audit()).await.is_err() {
        tracing::warn!("audit records of reads still queued at shutdown were dropped");
    }
    deployment.stores.close().await;
    Ok(())
}
