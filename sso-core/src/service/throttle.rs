//! Brute-force throttling over the shared `CounterStore` (spec/concepts.md §8).
//!
//! `user` and `totp` attempts are *reserved* (counted) before they are evaluated, so parallel
//! guesses cannot exceed the limits; `ip` keys count failures only. A blocked key is refused
//! without evaluating anything and without counting.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{ThrottleConfig, ThrottlePolicy};
use crate::crypto::digest;
use crate::error::{SsoError, SsoResult};
use crate::ids::UserId;
use crate::time::Timestamp;

/// A throttle class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Per submitted username.
    User,
    /// Per client address.
    Ip,
    /// Per user's TOTP.
    Totp,
}

impl Class {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::User => "user",
            Class::Ip => "ip",
            Class::Totp => "totp",
        }
    }
}

/// A counter key with its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Class.
    pub class: Class,
    /// Counter-store key.
    pub key: String,
}

impl Key {
    /// `user:` + hex SHA-256 of the submitted username (known or not).
    pub fn user(username: &str) -> Key {
        Key { class: Class::User, key: format!("user:{}", digest::hex(&digest::sha256(username.as_bytes()))) }
    }

    /// `ip:` + client address, IPv6 truncated to `prefix` bits.
    pub fn ip(ip: IpAddr, ipv6_prefix: u8) -> Key {
        let text = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match IpNet::new(IpAddr::V6(v6), ipv6_prefix.min(128)) {
                Ok(net) => net.trunc().to_string(),
                Err(_) => v6.to_string(),
            },
        };
        Key { class: Class::Ip, key: format!("ip:{text}") }
    }

    /// `totp:` + user id.
    pub fn totp(user_id: &UserId) -> Key {
        Key { class: Class::Totp, key: format!("totp:{user_id}") }
    }
}

/// The policy of a class.
pub fn policy(cfg: &ThrottleConfig, class: Class) -> &ThrottlePolicy {
    match class {
        Class::User => &cfg.user,
        Class::Ip => &cfg.ip,
        Class::Totp => &cfg.totp,
    }
}

/// Until when a key with `n` consecutive failures, the last at `last`, is blocked.
pub fn blocked_until(p: &ThrottlePolicy, n: u64, last: Timestamp) -> Option<Timestamp> {
    let free = u64::from(p.free_attempts);
    if n <= free {
        return None;
    }
    if n >= u64::from(p.lockout_after) {
        return Some(last.add_secs(i64::try_from(p.lockout_s).unwrap_or(i64::MAX)));
    }
    let exp = u32::try_from(n - free - 1).unwrap_or(u32::MAX).min(62);
    let delay = p.base_delay_s.saturating_mul(1u64 << exp).min(p.max_delay_s);
    Some(last.add_secs(i64::try_from(delay).unwrap_or(i64::MAX)))
}

/// The `Throttled` error for a block ending at `until`.
pub fn throttled(until: Timestamp, now: Timestamp) -> SsoError {
    let micros = until.as_micros().saturating_sub(now.as_micros()).max(0);
    let secs = u64::try_from(micros).unwrap_or(0).div_ceil(1_000_000).max(1);
    SsoError::Throttled { retry_after: Duration::from_secs(secs) }
}

/// A refusal: the key is blocked until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub until: Timestamp,
}

pub(crate) fn check_state(p: &ThrottlePolicy, state: Option<(u64, Timestamp)>, now: Timestamp) -> Result<(), Blocked> {
    if let Some((n, last)) = state
        && let Some(until) = blocked_until(p, n, last)
        && until > now
    {
        return Err(Blocked { until });
    }
    Ok(())
}

pub(crate) fn ttl(p: &ThrottlePolicy) -> Duration {
    Duration::from_secs(p.window_s.max(p.lockout_s))
}

/// The result type of gate checks.
pub(crate) type Gate = SsoResult<()>;

impl super::Inner {
    fn refusal_metric(&self, class: Class) {
        let m = &self.metrics;
        super::metrics::inc(match class {
            Class::User => &m.throttle_refusals_user,
            Class::Ip => &m.throttle_refusals_ip,
            Class::Totp => &m.throttle_refusals_totp,
        });
    }

    /// A refusal: the first refusal of a block is audited (spec/audit.md G4), which a
    /// replay-marker compare-and-set on the block's end decides; later refusals in the same block
    /// only increment the metric (spec/concepts.md §8; security.md #51: 10 000 attempts in one
    /// lockout → 1 record, metric + 9 999).
    async fn refuse(&self, a: &mut super::trail::Audit, key: &Key, until: Timestamp) -> SsoError {
        let now = self.now();
        let marker = format!("throttle-audit:{}", key.key);
        let step = u64::try_from(until.as_micros()).unwrap_or(0);
        let ttl = until.since(now) + Duration::from_secs(1);
        let first = self.stores.counters.advance_step(&marker, step, now, ttl).await.unwrap_or(true);
        if !first {
            self.refusal_metric(key.class);
            self.skip(a);
        }
        throttled(until, now)
    }

    /// Refuses when `key` is blocked, without counting anything.
    pub(crate) async fn gate(&self, a: &mut super::trail::Audit, key: &Key) -> Gate {
        if !self.cfg.throttle.enabled {
            return Ok(());
        }
        let p = policy(&self.cfg.throttle, key.class);
        let now = self.now();
        let state = self.stores.counters.get(&key.key, now).await?;
        if let Err(b) = check_state(p, state, now) {
            return Err(self.refuse(a, key, b.until).await);
        }
        Ok(())
    }

    /// Reserves an attempt: refuses when blocked, else counts it before it is evaluated and
    /// refuses if a concurrent attempt took the last slot.
    pub(crate) async fn reserve(&self, a: &mut super::trail::Audit, key: &Key) -> Gate {
        if !self.cfg.throttle.enabled {
            return Ok(());
        }
        self.gate(a, key).await?;
        let p = policy(&self.cfg.throttle, key.class);
        let now = self.now();
        let (n, prev) = self.stores.counters.record_failure(&key.key, now, ttl(p)).await?;
        if let (Some(prev), true) = (prev, n > 1)
            && let Err(b) = check_state(p, Some((n - 1, prev)), now)
        {
            return Err(self.refuse(a, key, b.until).await);
        }
        Ok(())
    }

    /// Counts a failure on a key that is counted after the fact (`ip`).
    pub(crate) async fn count_failure(&self, key: &Key) {
        if !self.cfg.throttle.enabled {
            return;
        }
        let p = policy(&self.cfg.throttle, key.class);
        if let Err(e) = self.stores.counters.record_failure(&key.key, self.now(), ttl(p)).await {
            tracing::warn!(error = %e, class = key.class.as_str(), "could not count a failure");
        }
    }

    /// Clears a key only if it counts something now: a read (on SQLite, on the calling task)
    /// instead of a write for the common case of a key that was never counted — the `totp` key
    /// of a user without TOTP at login. A failed read still clears. An expired count is left
    /// to expire: it counts as zero, and the next failure starts afresh.
    pub(crate) async fn throttle_reset_if_counted(&self, key: &Key) {
        if !self.cfg.throttle.enabled {
            return;
        }
        if let Ok(None) = self.stores.counters.get(&key.key, self.now()).await {
            return;
        }
        self.throttle_reset(key).await;
    }

    /// Clears a key (success, unlock, reset).
    pub(crate) async fn throttle_reset(&self, key: &Key) {
        if !self.cfg.throttle.enabled {
            return;
        }
        if let Err(e) = self.stores.counters.reset(&key.key).await {
            tracing::warn!(error = %e, class = key.class.as_str(), "could not reset a throttle key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_then_lockout() {
        let p = ThrottlePolicy {
            free_attempts: 3,
            base_delay_s: 30,
            max_delay_s: 60,
            lockout_after: 5,
            lockout_s: 600,
            window_s: 3600,
        };
        let t = Timestamp::from_secs(1000);
        assert_eq!(blocked_until(&p, 3, t), None);
        assert_eq!(blocked_until(&p, 4, t), Some(t.add_secs(30)));
        assert_eq!(blocked_until(&p, 5, t), Some(t.add_secs(600)));
        let p2 = ThrottlePolicy { lockout_after: 10, ..p };
        assert_eq!(blocked_until(&p2, 5, t), Some(t.add_secs(60)));
        assert_eq!(blocked_until(&p2, 9, t), Some(t.add_secs(60)));
    }

    #[test]
    fn keys() {
        assert!(Key::user("alice").key.starts_with("user:"));
        assert_eq!(Key::ip("10.1.2.3".parse().unwrap(), 64).key, "ip:10.1.2.3");
        assert_eq!(Key::ip("2001:db8::1:2".parse().unwrap(), 64).key, "ip:2001:db8::/64");
    }

    #[test]
    fn retry_after_rounds_up() {
        let now = Timestamp::from_micros(1_000_000);
        match throttled(Timestamp::from_micros(2_500_000), now) {
            SsoError::Throttled { retry_after } => assert_eq!(retry_after.as_secs(), 2),
            e => panic!("{e:?}"),
        }
    }
}
