//! The read lane: connections for the hot single-statement reads (a session with its user, a
//! user by id or name), handed back without sqlx's release ping.
//!
//! sqlx 0.9 pings every pooled connection when it goes back to the pool (`Floating::
//! return_to_pool`, unconditionally, in a spawned task): a second round trip to the server per
//! statement, ≈ 10 % of the server's CPU on the session-verify path (PERFORMANCE.md). The ping is
//! there for a statement whose future was dropped half-way, which can leave the connection in the
//! middle of a reply. Here such a connection is never reused: a lease gives its connection back
//! only after the statement's reply was read to the end; a dropped or failed lease closes it.
//!
//! As in the pool ([`crate::PING_IF_IDLE`]), a connection idle longer than that is pinged before
//! use. The lane holds at most `size` connections and waits for one at most `connect_timeout`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A bounded set of connections for reads, outside the sqlx pool.
pub(crate) struct Lane {
    connect: PgConnectOptions,
    connect_timeout: Duration,
    /// Connections not in use, with the instant each came back.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// One per connection; closed by [`Lane::close`], which is how the lane knows it is closed.
    permits: Semaphore,
}

impl std::fmt::Debug for Lane {
    // The connect options hold the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("idle", &self.idle_count()).finish_non_exhaustive()
    }
}

/// One connection in use; it goes back to the lane only through [`Lease::give_back`].
struct Lease<'a> {
    lane: &'a Lane,
    conn: Option<PgConnection>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn give_back(mut self) {
        // Checked under the lock `close` drains with, after closing: a connection is either
        // drained by `close` or never put back.
        if let Some(conn) = self.conn.take()
            && let Ok(mut idle) = self.lane.idle.lock()
            && !self.lane.permits.is_closed()
        {
            idle.push((conn, Instant::now()));
        }
    }
}

impl Lane {
    /// A lane of at most `size` connections (opened when first needed).
    pub(crate) fn new(connect: PgConnectOptions, size: usize, connect_timeout: Duration) -> Lane {
        Lane { connect, connect_timeout, idle: Mutex::new(Vec::new()), permits: Semaphore::new(size) }
    }

    /// Runs a statement that returns at most one row.
    pub(crate) async fn fetch_optional(
        &self,
        query: sqlx::query::Query<'_, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let mut lease = self.lease().await?;
        let conn = lease.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        // Dropped here (cancelled) or failed: the lease closes the connection.
        let row = query.fetch_optional(conn).await?;
        lease.give_back();
        Ok(row)
    }

    async fn lease(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.connect_timeout, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match kept {
            Some((mut conn, since)) => {
                if since.elapsed() <= crate::PING_IF_IDLE || conn.ping().await.is_ok() {
                    conn
                } else {
                    self.open().await?
                }
            }
            None => self.open().await?,
        };
        Ok(Lease { lane: self, conn: Some(conn), _permit: permit })
    }

    async fn open(&self) -> Result<PgConnection, sqlx::Error> {
        tokio::time::timeout(self.connect_timeout, self.connect.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Closes the idle connections; later reads fail as on a closed pool.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle: Vec<(PgConnection, Instant)> =
            self.idle.lock().map(|mut i| std::mem::take(&mut *i)).unwrap_or_default();
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }

    /// Connections waiting for a read (tests).
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}
