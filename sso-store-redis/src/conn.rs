//! One connection type over a single server (a reconnecting `ConnectionManager`) or a cluster, with
//! the operation timeout on every command.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Script};
use sso_core::StoreError;

/// A connection to Redis or Redis Cluster (cheap to clone; multiplexed).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::unavailable(format!("redis: {}", e.kind_str()))
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        // The error text may echo arguments; keep only the kind and the server's code.
        format!("{:?}{}", self.kind(), self.code().map(|c| format!(" {c}")).unwrap_or_default())
    }
}

impl Conn {
    /// Connects to `url` (`redis://…`, or `redis+cluster://h1:p,h2:p,…`).
    pub(crate) async fn open(url: &str, connect_timeout: Duration, op_timeout: Duration) -> Result<Conn, StoreError> {
        if let Some(hosts) = url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> =
                hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{h}")).collect();
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(connect_timeout)
                .response_timeout(op_timeout)
                .build()
                .map_err(unavailable)?;
            let c = tokio::time::timeout(connect_timeout, client.get_async_connection())
                .await
                .map_err(|_| StoreError::unavailable("redis cluster: connect timeout"))?
                .map_err(unavailable)?;
            return Ok(Conn::Cluster(c));
        }
        let client = redis::Client::open(url).map_err(unavailable)?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let c = tokio::time::timeout(connect_timeout, ConnectionManager::new_with_config(client, cfg))
            .await
            .map_err(|_| StoreError::unavailable("redis: connect timeout"))?
            .map_err(unavailable)?;
        Ok(Conn::Single(c))
    }

    /// Runs a command.
    pub(crate) async fn cmd<T: FromRedisValue>(&self, cmd: &Cmd, timeout: Duration) -> Result<T, StoreError> {
        let fut = async {
            match self {
                Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
                Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| StoreError::unavailable("redis: timeout"))?
            .map_err(unavailable)
    }

    /// Runs a Lua script (all `keys` must share one hash slot).
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[String],
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(a);
        }
        let fut = async {
            match self {
                Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
                Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| StoreError::unavailable("redis: timeout"))?
            .map_err(unavailable)
    }
}
