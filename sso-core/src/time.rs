//! Time: a UTC timestamp with microsecond precision, its Zato wire form, and an injectable clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// A UTC instant, microseconds since the Unix epoch. Storage keeps this precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// `9999-12-31T00:00:00`, the expiration time shown for attributes that never expire.
pub const NEVER: Timestamp = Timestamp(253_402_214_400_000_000);

impl Timestamp {
    /// From microseconds since the epoch.
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    /// From whole seconds since the epoch.
    pub const fn from_secs(s: i64) -> Self {
        Timestamp(s.saturating_mul(1_000_000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (floor).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Milliseconds since the epoch (floor).
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(us))
    }

    /// `self - d`, saturating.
    pub fn minus(self, d: Duration) -> Self {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(us))
    }

    /// `self + secs` seconds (may be negative), saturating.
    pub fn add_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }

    /// The duration from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let d = self.0.saturating_sub(earlier.0);
        Duration::from_micros(u64::try_from(d).unwrap_or(0))
    }

    fn to_offset(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000).ok()
    }

    /// The Zato wire form: `YYYY-MM-DDTHH:MM:SS`, plus `.ffffff` only when the microseconds are non-zero.
    pub fn to_zato(self) -> String {
        let Some(dt) = self.to_offset() else {
            return String::from("invalid");
        };
        let micros = dt.microsecond();
        let mut s = String::with_capacity(26);
        push_datetime(&mut s, &dt);
        if micros != 0 {
            s.push('.');
            push_digits(&mut s, micros, 6);
        }
        s
    }

    /// RFC 3339 UTC with microseconds and `Z` (the audit `ts` form), e.g. `2026-11-27T10:15:30.123456Z`.
    pub fn to_rfc3339_micros(self) -> String {
        // Hand-written rather than `format!`: every audit record carries one (the hot path of
        // reads). The `YYYY-MM-DDTHH:MM:SS` part changes once a second, so each thread keeps the
        // last one it formatted and only the microseconds are formatted per call.
        let secs = self.0.div_euclid(1_000_000);
        let micros = u32::try_from(self.0.rem_euclid(1_000_000)).unwrap_or(0);
        let mut s = String::with_capacity(27);
        let cached = LAST_SECOND.with(|c| {
            let (at, text) = c.get();
            let hit = at == Some(secs);
            if hit {
                s.push_str(std::str::from_utf8(&text).unwrap_or_default());
            }
            hit
        });
        if !cached {
            let Some(dt) = self.to_offset() else {
                return String::from("invalid");
            };
            push_datetime(&mut s, &dt);
            if let Ok(text) = <[u8; 19]>::try_from(s.as_bytes()) {
                LAST_SECOND.with(|c| c.set((Some(secs), text)));
            }
        }
        s.push('.');
        push_digits(&mut s, micros, 6);
        s.push('Z');
        s
    }

    /// Parses a datetime input: the Zato form (with or without fraction), a date alone (midnight),
    /// or RFC 3339 with an offset (converted to UTC).
    pub fn parse(input: &str) -> Option<Timestamp> {
        let s = input.trim();
        if s.is_empty() || s.len() > 40 {
            return None;
        }
        if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
            return Self::from_offset(dt);
        }
        let (date_part, time_part) = match s.split_once(['T', ' ']) {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let date = parse_date(date_part)?;
        let time = match time_part {
            None => Time::MIDNIGHT,
            Some(t) => parse_time(t)?,
        };
        Self::from_offset(PrimitiveDateTime::new(date, time).assume_utc())
    }

    fn from_offset(dt: OffsetDateTime) -> Option<Timestamp> {
        let nanos = dt.unix_timestamp_nanos();
        i64::try_from(nanos / 1000).ok().map(Timestamp)
    }
}

fn parse_num(s: &str, len: usize) -> Option<u32> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(s: &str) -> Option<Date> {
    let mut it = s.split('-');
    let y = parse_num(it.next()?, 4)?;
    let m = parse_num(it.next()?, 2)?;
    let d = parse_num(it.next()?, 2)?;
    if it.next().is_some() {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()
}

fn parse_time(s: &str) -> Option<Time> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let mut it = hms.split(':');
    let h = parse_num(it.next()?, 2)?;
    let m = parse_num(it.next()?, 2)?;
    let sec = match it.next() {
        Some(x) => parse_num(x, 2)?,
        None => 0,
    };
    if it.next().is_some() {
        return None;
    }
    let micros = match frac {
        None => 0,
        Some(f) => {
            if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{f:0<6}");
            padded.parse::<u32>().ok()?
        }
    };
    Time::from_hms_micro(u8::try_from(h).ok()?, u8::try_from(m).ok()?, u8::try_from(sec).ok()?, micros).ok()
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_zato())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_zato())
    }
}

/// The source of "now". Production uses [`SystemClock`]; tests inject [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to (tests, fixtures).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `t`.
    pub fn new(t: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(t.0)))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_zato())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid datetime"))
    }
}

/// Appends `v` as exactly `width` decimal digits (zero-padded; `v` is below `10^width`).
fn push_digits(s: &mut String, v: u32, width: u32) {
    let mut div = 10u32.pow(width.saturating_sub(1));
    while div > 0 {
        s.push(char::from(b'0' + u8::try_from((v / div) % 10).unwrap_or(0)));
        div /= 10;
    }
}

thread_local! {
    /// The last whole second [`Timestamp::to_rfc3339_micros`] formatted on this thread, and its
    /// `YYYY-MM-DDTHH:MM:SS` text.
    static LAST_SECOND: std::cell::Cell<(Option<i64>, [u8; 19])> = const { std::cell::Cell::new((None, [0; 19])) };
}

/// Appends `YYYY-MM-DDTHH:MM:SS`.
fn push_datetime(s: &mut String, dt: &time::OffsetDateTime) {
    push_digits(s, u32::try_from(dt.year()).unwrap_or(0), 4);
    s.push('-');
    push_digits(s, u32::from(u8::from(dt.month())), 2);
    s.push('-');
    push_digits(s, u32::from(dt.day()), 2);
    s.push('T');
    push_digits(s, u32::from(dt.hour()), 2);
    s.push(':');
    push_digits(s, u32::from(dt.minute()), 2);
    s.push(':');
    push_digits(s, u32::from(dt.second()), 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread cache of the last second never leaks one second's text into another:
    /// consecutive calls across second boundaries (both sides of 1970 too) equal the uncached form.
    #[test]
    fn rfc3339_second_cache_follows_the_clock() {
        let plain = |t: Timestamp| {
            let dt = t.to_offset().unwrap();
            let mut s = String::new();
            push_datetime(&mut s, &dt);
            format!("{s}.{:06}Z", dt.microsecond())
        };
        for base in [-2_000_001i64, -1, 0, 1_700_000_000_000_000, 1_799_999_999_999_998] {
            for step in [0i64, 1, 2, 999_998, 999_999, 1_000_000, 1_000_001, 3_600_000_000, 1] {
                let t = Timestamp::from_micros(base + step);
                assert_eq!(t.to_rfc3339_micros(), plain(t), "{}", base + step);
                assert_eq!(t.to_rfc3339_micros(), plain(t), "{} (cached)", base + step);
            }
        }
    }

    /// The hand-written formatting agrees with `format!` over the whole year range.
    #[test]
    fn hand_formatting_matches_format() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // 0001-01-01 .. 9999-12-31
            let us = (x % 315_537_897_600_000_000) as i64 - 62_135_596_800_000_000;
            let t = Timestamp::from_micros(us);
            let dt = t.to_offset().unwrap();
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.microsecond()
            );
            assert_eq!(t.to_rfc3339_micros(), want);
            let zato = if dt.microsecond() == 0 { want[..19].to_owned() } else { want[..26].to_owned() };
            assert_eq!(t.to_zato(), zato);
        }
    }

    #[test]
    fn zato_form_omits_zero_micros() {
        let t = Timestamp::parse("2345-12-27T11:22:33").unwrap();
        assert_eq!(t.to_zato(), "2345-12-27T11:22:33");
        let t = Timestamp::parse("2026-11-27T10:15:30.123456").unwrap();
        assert_eq!(t.to_zato(), "2026-11-27T10:15:30.123456");
        assert_eq!(t.to_rfc3339_micros(), "2026-11-27T10:15:30.123456Z");
    }

    #[test]
    fn parses_date_alone_and_offsets() {
        assert_eq!(Timestamp::parse("2345-12-27").unwrap().to_zato(), "2345-12-27T00:00:00");
        let t = Timestamp::parse("2026-11-27T12:00:00+02:00").unwrap();
        assert_eq!(t.to_zato(), "2026-11-27T10:00:00");
        assert!(Timestamp::parse("2026-13-01").is_none());
        assert!(Timestamp::parse("yesterday").is_none());
        assert!(Timestamp::parse("").is_none());
    }

    #[test]
    fn never_is_9999() {
        assert_eq!(NEVER.to_zato(), "9999-12-31T00:00:00");
    }

    #[test]
    fn manual_clock_moves() {
        let c = ManualClock::new(Timestamp::from_secs(59));
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now(), Timestamp::from_secs(60));
    }
}
