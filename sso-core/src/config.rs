//! Configuration: every key of spec/config.md as typed sections with the spec's defaults, and the
//! validation that runs before anything starts. Loading (figment: defaults < `sso.toml` < `SSO_*`
//! environment) lives in `sso-http`; the types, defaults and checks live here so every embedder
//! shares them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::crypto::password::HashParams;

/// A configuration problem: the key and what is wrong with it. Displays as one line
/// `config error: <key>: <problem>` (spec/config.md §1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {problem}")]
pub struct ConfigError {
    /// The dotted key, e.g. `throttle.totp.lockout_after`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into() }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[crypto]`
    pub crypto: CryptoConfig,
    /// `[apps]`
    pub apps: AppsConfig,
    /// `[login]`
    pub login: LoginConfig,
    /// `[user_address_list]`: username → `"*"` or a list of IPs / CIDR networks.
    pub user_address_list: BTreeMap<String, AddressEntry>,
    /// `[session]`
    pub session: SessionConfig,
    /// `[password]`
    pub password: PasswordConfig,
    /// `[signup]`
    pub signup: SignupConfig,
    /// `[user_validation]`
    pub user_validation: UserValidationConfig,
    /// `[search]`
    pub search: SearchConfig,
    /// `[password_reset]`
    pub password_reset: PasswordResetConfig,
    /// `[totp]`
    pub totp: TotpConfig,
    /// `[throttle]`
    pub throttle: ThrottleConfig,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[notify]`
    pub notify: NotifyConfig,
    /// `[attr]`
    pub attr: AttrConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to bind.
    pub listen: String,
    /// Node name in audit records and logs; empty = host name.
    pub node_id: String,
    /// PEM certificate file (with `tls_key_file`: serve HTTPS).
    pub tls_cert_file: String,
    /// PEM key file.
    pub tls_key_file: String,
    /// Acknowledges a TLS-terminating proxy in front (required for non-loopback plain HTTP).
    pub behind_tls_proxy: bool,
    /// Graceful shutdown limit in seconds.
    pub shutdown_grace_s: u64,
    /// Expiry cleanup period in seconds; 0 disables.
    pub cleanup_interval_s: u64,
    /// `error` … `trace`.
    pub log_level: LogLevel,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:17010".into(),
            node_id: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            behind_tls_proxy: false,
            shutdown_grace_s: 30,
            cleanup_interval_s: 300,
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
        }
    }
}

/// Log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// error
    Error,
    /// warn
    Warn,
    /// info
    Info,
    /// debug
    Debug,
    /// trace
    Trace,
}

impl LogLevel {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// API path prefix.
    pub prefix: String,
    /// Larger bodies → 413.
    pub max_body_bytes: usize,
    /// Per-request limit → 503.
    pub request_timeout_ms: u64,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Unknown request fields → 400.
    pub reject_unknown_fields: bool,
    /// Serve `GET /metrics`.
    pub metrics_enabled: bool,
    /// Serve `GET /openapi.json`.
    pub openapi_enabled: bool,
    /// CORS origins; empty = no CORS headers.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            prefix: "/zato/sso".into(),
            max_body_bytes: 65_536,
            request_timeout_ms: 10_000,
            trusted_proxies: Vec::new(),
            reject_unknown_fields: false,
            metrics_enabled: true,
            openapi_enabled: true,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Users, user attributes, linked auth, reset tokens.
    pub users: String,
    /// Sessions and session attributes; empty = `users`.
    pub sessions: String,
    /// Counters; empty = `sessions`.
    pub counters: String,
    /// Connections per pool (per database a node opens; on PostgreSQL, half of them, rounded
    /// down, serve the hot single-row reads and the rest everything else).
    pub pool_max: u32,
    /// Connection attempt limit.
    pub connect_timeout_ms: u64,
    /// Statement / command limit.
    pub op_timeout_ms: u64,
    /// Keep retrying an unreachable store at start-up for this long.
    pub startup_retry_s: u64,
    /// Apply pending migrations at `serve` start.
    pub migrate_on_start: bool,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// SQLite busy timeout.
    pub sqlite_busy_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            users: "sqlite://./sso.db".into(),
            sessions: String::new(),
            counters: String::new(),
            pool_max: 10,
            connect_timeout_ms: 5_000,
            op_timeout_ms: 5_000,
            startup_retry_s: 0,
            migrate_on_start: true,
            redis_prefix: "sso:".into(),
            sqlite_busy_timeout_ms: 5_000,
        }
    }
}

impl StoreConfig {
    /// The effective sessions URL (`sessions`, else `users`).
    pub fn sessions_url(&self) -> &str {
        if self.sessions.is_empty() { &self.users } else { &self.sessions }
    }

    /// The effective counters URL (`counters`, else the sessions URL).
    pub fn counters_url(&self) -> &str {
        if self.counters.is_empty() { self.sessions_url() } else { &self.counters }
    }
}

/// `[crypto]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CryptoConfig {
    /// Key ring file.
    pub key_ring_file: String,
    /// Key ring TOML as a string (secret); wins over the file.
    pub key_ring_inline: String,
    /// Create the key ring file on first start.
    pub create_key_ring: bool,
    /// Store e-mails under AEAD.
    pub encrypt_email: bool,
    /// Store password hashes under AEAD.
    pub encrypt_password: bool,
}

impl fmt::Debug for CryptoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoConfig")
            .field("key_ring_file", &self.key_ring_file)
            .field("key_ring_inline", &if self.key_ring_inline.is_empty() { "" } else { "<redacted>" })
            .field("create_key_ring", &self.create_key_ring)
            .field("encrypt_email", &self.encrypt_email)
            .field("encrypt_password", &self.encrypt_password)
            .finish()
    }
}

impl Default for CryptoConfig {
    fn default() -> Self {
        CryptoConfig {
            key_ring_file: "./sso-keys.toml".into(),
            key_ring_inline: String::new(),
            create_key_ring: true,
            encrypt_email: true,
            encrypt_password: true,
        }
    }
}

/// `[apps]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsConfig {
    /// Every valid `current_app`.
    pub all: Vec<String>,
    /// `current_app` of CLI operations.
    pub default: String,
    /// Header that may carry `current_app`.
    pub http_header: String,
    /// Apps that may sign users up; empty = all.
    pub signup_allowed: Vec<String>,
    /// Apps users may log in through.
    pub login_allowed: Vec<String>,
    /// Apps whose login-body metadata is believed.
    pub login_metadata_allowed: Vec<String>,
    /// Show `E004001`/`E004002` instead of `E005001`.
    pub inform_if_app_invalid: bool,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            all: vec!["CRM".into()],
            default: "CRM".into(),
            http_header: "X-Zato-SSO-Current-App".into(),
            signup_allowed: Vec::new(),
            login_allowed: vec!["CRM".into()],
            login_metadata_allowed: Vec::new(),
            inform_if_app_invalid: true,
        }
    }
}

/// `[login]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Refuse users without an address-list entry.
    pub reject_if_not_listed: bool,
    /// `E005002` instead of `E005001`.
    pub inform_if_locked: bool,
    /// `E005003` instead of `E005001`.
    pub inform_if_not_confirmed: bool,
    /// `E005004` instead of `E005001`.
    pub inform_if_not_approved: bool,
    /// `E005008` instead of `E005001`.
    pub inform_if_totp_missing: bool,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            reject_if_not_listed: false,
            inform_if_locked: true,
            inform_if_not_confirmed: true,
            inform_if_not_approved: true,
            inform_if_totp_missing: true,
        }
    }
}

/// A `[user_address_list]` entry: `"*"` or a list of IPs / CIDR networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AddressEntry {
    /// Must be `"*"`: any address.
    Any(String),
    /// Allowed networks.
    List(Vec<String>),
}

impl AddressEntry {
    /// Compiles the entry: `None` = any address, else the networks.
    pub fn compile(&self) -> Result<Option<Vec<IpNet>>, String> {
        match self {
            AddressEntry::Any(s) if s == "*" => Ok(None),
            AddressEntry::Any(s) => parse_net(s).map(|n| Some(vec![n])),
            AddressEntry::List(v) => v.iter().map(|s| parse_net(s)).collect::<Result<Vec<_>, _>>().map(Some),
        }
    }
}

/// Parses an IP address or CIDR network.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(n);
    }
    t.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("{s:?} is not an IP address or CIDR network"))
}

/// `[session]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Idle lifetime in minutes.
    pub expiry: u64,
    /// Absolute lifetime in minutes; 0 = none.
    pub max_lifetime: u64,
    /// Every successful authenticated call renews.
    pub renew_on_use: bool,
    /// Sessions per user (oldest revoked at login); 0 = unlimited.
    pub max_per_user: u32,
    /// Renewal entries kept per session (0..=100).
    pub history_max: u32,
    /// Per-node user cache in ms; 0 = always read.
    pub user_cache_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            expiry: 60,
            max_lifetime: 720,
            renew_on_use: false,
            max_per_user: 0,
            history_max: 0,
            user_cache_ms: 0,
        }
    }
}

/// `[password]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordConfig {
    /// Lifetime in days; 0 = never expires.
    pub expiry: u64,
    /// `E003004` instead of `E005001`.
    pub inform_if_expired: bool,
    /// See spec/sessions.md §1 step 13.
    pub inform_if_about_to_expire: bool,
    /// See spec/sessions.md §1 step 13.
    pub log_in_if_about_to_expire: bool,
    /// Warning window in days; 0 = none.
    pub about_to_expire_threshold: u64,
    /// `E003007` instead of `E005001`.
    pub inform_if_must_be_changed: bool,
    /// Show password-policy codes to unauthenticated callers.
    pub inform_if_invalid: bool,
    /// Minimum code points.
    pub min_length: usize,
    /// Maximum code points.
    pub max_length: usize,
    /// zxcvbn score required (0 = off).
    pub min_complexity: u8,
    /// Case-insensitive substrings refused.
    pub reject_list: Vec<String>,
    /// Refuse the bundled common-password list.
    pub reject_common: bool,
    /// Refuse passwords containing the username.
    pub reject_if_contains_username: bool,
    /// A password change ends the user's other sessions.
    pub revoke_sessions_on_change: bool,
    /// argon2id memory (KiB).
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    pub argon2_iterations: u32,
    /// argon2id parallelism.
    pub argon2_parallelism: u32,
    /// Allow parameters below the minimum (tests only).
    pub allow_weak_hash_params: bool,
    /// Concurrent hash computations; 0 = number of CPUs.
    pub hash_max_concurrent: usize,
    /// Wait for a hashing slot before 503.
    pub hash_queue_timeout_ms: u64,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            expiry: 730,
            inform_if_expired: false,
            inform_if_about_to_expire: true,
            log_in_if_about_to_expire: true,
            about_to_expire_threshold: 30,
            inform_if_must_be_changed: true,
            inform_if_invalid: true,
            min_length: 8,
            max_length: 256,
            min_complexity: 0,
            reject_list: [
                "111111",
                "123123",
                "123321",
                "123456",
                "123qwe",
                "1q2w3e",
                "1q2w3e4r",
                "1q2w3e4r5t",
                "222222",
                "333333",
                "444444",
                "555555",
                "654321",
                "666666",
                "777777",
                "888888",
                "999999",
                "987654321",
                "google",
                "letmein",
                "mynoob",
                "password",
                "qwerty",
                "zxcvbnm",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            reject_common: true,
            reject_if_contains_username: true,
            revoke_sessions_on_change: true,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            allow_weak_hash_params: false,
            hash_max_concurrent: 0,
            hash_queue_timeout_ms: 5_000,
        }
    }
}

impl PasswordConfig {
    /// The configured argon2id parameters.
    pub fn hash_params(&self) -> HashParams {
        HashParams { m_kib: self.argon2_memory_kib, t: self.argon2_iterations, p: self.argon2_parallelism }
    }
}

/// `[signup]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignupConfig {
    /// New users start `before_decision`.
    pub is_approval_needed: bool,
    /// Sign-up needs an e-mail.
    pub is_email_required: bool,
    /// Username length limit (all paths).
    pub max_length_username: usize,
    /// E-mail length limit (all paths).
    pub max_length_email: usize,
    /// Show `E001002` at sign-up.
    pub inform_if_user_exists: bool,
    /// Show `E001001/3/4` at sign-up.
    pub inform_if_user_invalid: bool,
    /// Show `E002002` at sign-up.
    pub inform_if_email_exists: bool,
    /// Show `E002001/3/4/5` at sign-up.
    pub inform_if_email_invalid: bool,
}

impl Default for SignupConfig {
    fn default() -> Self {
        SignupConfig {
            is_approval_needed: true,
            is_email_required: true,
            max_length_username: 128,
            max_length_email: 128,
            inform_if_user_exists: false,
            inform_if_user_invalid: false,
            inform_if_email_exists: false,
            inform_if_email_invalid: false,
        }
    }
}

/// `[user_validation]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserValidationConfig {
    /// Substrings refused in sign-up usernames.
    pub reject_username: Vec<String>,
    /// Substrings refused in sign-up e-mails.
    pub reject_email: Vec<String>,
}

impl Default for UserValidationConfig {
    fn default() -> Self {
        let v: Vec<String> = ["zato", "admin", "root", "system", "sso"].into_iter().map(String::from).collect();
        UserValidationConfig { reject_username: v.clone(), reject_email: v }
    }
}

/// `[search]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Page size when none or < 1 is given.
    pub default_page_size: u32,
    /// Cap.
    pub max_page_size: u32,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { default_page_size: 50, max_page_size: 100 }
    }
}

/// How `password_reset.create_token` finds the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSearchBy {
    /// Exact username.
    Username,
    /// E-mail through the blind index.
    Email,
    /// Username first, then e-mail.
    UsernameOrEmail,
}

/// `[password_reset]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordResetConfig {
    /// PRT lifetime in minutes.
    pub valid_for: u64,
    /// Reset-key lifetime after access, in seconds.
    pub password_change_session_duration: u64,
    /// How the user is found.
    pub user_search_by: UserSearchBy,
}

impl Default for PasswordResetConfig {
    fn default() -> Self {
        PasswordResetConfig {
            valid_for: 1440,
            password_change_session_duration: 1800,
            user_search_by: UserSearchBy::Username,
        }
    }
}

/// `[totp]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TotpConfig {
    /// Earlier steps accepted (0..=2).
    pub window_back: u8,
    /// Later steps accepted (0..=2).
    pub window_ahead: u8,
    /// Disable replay protection (Zato behaviour).
    pub allow_reuse: bool,
    /// Callers may supply keys.
    pub allow_supplied_key: bool,
    /// A super-user resetting another user's key ends that user's sessions.
    pub revoke_sessions_on_admin_reset: bool,
    /// An own reset ends the user's other sessions.
    pub revoke_other_sessions_on_self_reset: bool,
    /// > 0: own reset needs a session younger than this.
    pub self_reset_max_session_age_s: u64,
    /// Turning on one's own TOTP needs a valid code.
    pub require_code_to_enable: bool,
    /// Issuer in enrolment URIs.
    pub issuer: String,
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            window_back: 1,
            window_ahead: 0,
            allow_reuse: false,
            allow_supplied_key: true,
            revoke_sessions_on_admin_reset: true,
            revoke_other_sessions_on_self_reset: false,
            self_reset_max_session_age_s: 0,
            require_code_to_enable: false,
            issuer: "sso".into(),
        }
    }
}

/// One throttle class's policy (spec/concepts.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottlePolicy {
    /// Failures without delay.
    pub free_attempts: u32,
    /// First delay in seconds, doubled per further failure.
    pub base_delay_s: u64,
    /// Delay cap.
    pub max_delay_s: u64,
    /// Failures that start a lockout.
    pub lockout_after: u32,
    /// Lockout length in seconds.
    pub lockout_s: u64,
    /// A key expires this long after its last failure.
    pub window_s: u64,
}

/// Partial per-class policy as read from configuration (missing keys take the class default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottlePolicyPatch {
    free_attempts: Option<u32>,
    base_delay_s: Option<u64>,
    max_delay_s: Option<u64>,
    lockout_after: Option<u32>,
    lockout_s: Option<u64>,
    window_s: Option<u64>,
}

macro_rules! class_policy {
    ($fn:ident, $patch_fn:ident, $fa:expr, $bd:expr, $md:expr, $la:expr, $ls:expr, $ws:expr) => {
        fn $fn() -> ThrottlePolicy {
            ThrottlePolicy {
                free_attempts: $fa,
                base_delay_s: $bd,
                max_delay_s: $md,
                lockout_after: $la,
                lockout_s: $ls,
                window_s: $ws,
            }
        }

        fn $patch_fn<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ThrottlePolicy, D::Error> {
            let p = ThrottlePolicyPatch::deserialize(d)?;
            let base = $fn();
            Ok(ThrottlePolicy {
                free_attempts: p.free_attempts.unwrap_or(base.free_attempts),
                base_delay_s: p.base_delay_s.unwrap_or(base.base_delay_s),
                max_delay_s: p.max_delay_s.unwrap_or(base.max_delay_s),
                lockout_after: p.lockout_after.unwrap_or(base.lockout_after),
                lockout_s: p.lockout_s.unwrap_or(base.lockout_s),
                window_s: p.window_s.unwrap_or(base.window_s),
            })
        }
    };
}

class_policy!(default_user_policy, de_user_policy, 3, 1, 60, 10, 900, 3600);
class_policy!(default_ip_policy, de_ip_policy, 20, 1, 60, 100, 900, 3600);
class_policy!(default_totp_policy, de_totp_policy, 3, 30, 60, 5, 600, 3600);

/// `[throttle]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// false turns throttling off.
    pub enabled: bool,
    /// IPv6 addresses are counted per prefix of this length.
    pub ipv6_prefix: u8,
    /// `user` class.
    #[serde(deserialize_with = "de_user_policy")]
    pub user: ThrottlePolicy,
    /// `ip` class.
    #[serde(deserialize_with = "de_ip_policy")]
    pub ip: ThrottlePolicy,
    /// `totp` class.
    #[serde(deserialize_with = "de_totp_policy")]
    pub totp: ThrottlePolicy,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: true,
            ipv6_prefix: 64,
            user: default_user_policy(),
            ip: default_ip_policy(),
            totp: default_totp_policy(),
        }
    }
}

/// What happens when a required audit sink fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Fail closed: the operation answers 503 and changes nothing.
    Fail,
    /// Log and proceed.
    Log,
}

/// An audit sink name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// JSON lines on stdout.
    Stdout,
    /// JSON-lines file.
    File,
    /// SQL table.
    Sql,
    /// Redis stream.
    Redis,
}

impl SinkKind {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Sql => "sql",
            SinkKind::Redis => "redis",
        }
    }
}

/// fsync policy of the file sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Batch, write and `fdatasync` before acknowledging.
    Always,
    /// Acknowledge after `write(2)`.
    Never,
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Sinks in use.
    pub sinks: Vec<SinkKind>,
    /// `fail` or `log`.
    pub on_failure: OnFailure,
    /// Record successful read-only operations.
    pub include_reads: bool,
    /// Sink used by queries; empty = first queryable.
    pub query_sink: String,
    /// `[audit.stdout]`
    pub stdout: StdoutSinkConfig,
    /// `[audit.file]`
    pub file: FileSinkConfig,
    /// `[audit.sql]`
    pub sql: SqlSinkConfig,
    /// `[audit.redis]`
    pub redis: RedisSinkConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            // The embedded default audits into its own database (same transaction) and to stdout.
            sinks: vec![SinkKind::Stdout, SinkKind::Sql],
            on_failure: OnFailure::Fail,
            include_reads: true,
            query_sink: String::new(),
            stdout: StdoutSinkConfig::default(),
            file: FileSinkConfig::default(),
            sql: SqlSinkConfig::default(),
            redis: RedisSinkConfig::default(),
        }
    }
}

/// `[audit.stdout]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Whether a failure fails the operation.
    pub required: bool,
}

/// `[audit.file]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSinkConfig {
    /// File path.
    pub path: String,
    /// Rotate above this size.
    pub max_size_mb: u64,
    /// Rotated files kept.
    pub max_files: u32,
    /// `always` or `never`.
    pub fsync: Fsync,
    /// Whether a failure fails the operation.
    pub required: bool,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            path: "./audit.jsonl".into(),
            max_size_mb: 20,
            max_files: 10,
            fsync: Fsync::Always,
            required: true,
        }
    }
}

/// `[audit.sql]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSinkConfig {
    /// SQLite/Postgres URL; empty = `store.users`.
    pub url: String,
    /// Table name.
    pub table: String,
    /// Delete records older than this; 0 = keep forever.
    pub retention_days: u64,
    /// Whether a failure fails the operation.
    pub required: bool,
}

impl Default for SqlSinkConfig {
    fn default() -> Self {
        SqlSinkConfig { url: String::new(), table: "sso_audit".into(), retention_days: 365, required: true }
    }
}

/// `[audit.redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// Redis URL; empty = `store.sessions` if Redis.
    pub url: String,
    /// Stream key.
    pub stream: String,
    /// Approximate cap.
    pub maxlen: u64,
    /// Whether a failure fails the operation.
    pub required: bool,
}

impl Default for RedisSinkConfig {
    fn default() -> Self {
        RedisSinkConfig { url: String::new(), stream: "sso:audit".into(), maxlen: 1_000_000, required: true }
    }
}

/// `[notify]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Webhook URL; empty = none.
    pub webhook_url: String,
    /// HMAC key of the signature header (secret).
    pub webhook_secret: String,
    /// Per attempt.
    pub timeout_ms: u64,
    /// Extra attempts.
    pub retries: u32,
    /// Events sent to the webhook.
    pub events: Vec<String>,
    /// `site_name` of every event.
    pub site_name: String,
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &if self.webhook_secret.is_empty() { "" } else { "<redacted>" })
            .field("timeout_ms", &self.timeout_ms)
            .field("retries", &self.retries)
            .field("events", &self.events)
            .field("site_name", &self.site_name)
            .finish()
    }
}

/// The notification event names.
pub const NOTIFY_EVENTS: [&str; 5] = ["signup", "password_reset", "password_changed", "totp_reset", "user_locked"];

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhook_url: String::new(),
            webhook_secret: String::new(),
            timeout_ms: 5_000,
            retries: 3,
            events: NOTIFY_EVENTS.iter().map(|s| (*s).to_owned()).collect(),
            site_name: "site".into(),
        }
    }
}

/// `[attr]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttrConfig {
    /// Serialised value size limit.
    pub max_value_bytes: usize,
    /// Items in one `*_many` call.
    pub max_per_call: usize,
}

impl Default for AttrConfig {
    fn default() -> Self {
        AttrConfig { max_value_bytes: 65_536, max_per_call: 100 }
    }
}

fn check(cond: bool, key: &str, problem: &str) -> Result<(), ConfigError> {
    if cond { Ok(()) } else { Err(ConfigError::new(key, problem)) }
}

fn valid_app_name(s: &str) -> bool {
    (1..=64).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

fn is_redis_url(u: &str) -> bool {
    u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("redis+cluster://")
}

fn known_store_url(u: &str) -> bool {
    u.starts_with("sqlite:")
        || u.starts_with("postgres://")
        || u.starts_with("postgresql://")
        || u.starts_with("memory://")
        || is_redis_url(u)
}

impl Config {
    /// Checks every range and cross-key rule; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        check(!s.listen.is_empty(), "server.listen", "must not be empty")?;
        check(
            s.tls_cert_file.is_empty() == s.tls_key_file.is_empty(),
            "server.tls_key_file",
            "tls_cert_file and tls_key_file must be set together",
        )?;

        let h = &self.http;
        check(h.prefix.starts_with('/'), "http.prefix", "must start with /")?;
        check(h.prefix.len() == 1 || !h.prefix.ends_with('/'), "http.prefix", "must not end with /")?;
        check(
            h.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c)),
            "http.prefix",
            "may hold only letters, digits and / - . _ ~",
        )?;
        check(h.max_body_bytes >= 1024, "http.max_body_bytes", "must be >= 1024")?;
        check(h.request_timeout_ms >= 1, "http.request_timeout_ms", "must be >= 1")?;
        for p in &h.trusted_proxies {
            parse_net(p).map_err(|e| ConfigError::new("http.trusted_proxies", e))?;
        }

        let st = &self.store;
        for (key, url) in [
            ("store.users", st.users.as_str()),
            ("store.sessions", st.sessions.as_str()),
            ("store.counters", st.counters.as_str()),
        ] {
            if !url.is_empty() {
                check(
                    known_store_url(url),
                    key,
                    "unsupported URL scheme (sqlite:, postgres://, redis://, rediss://, redis+cluster://, memory://)",
                )?;
            }
        }
        check(!st.users.is_empty(), "store.users", "must not be empty")?;
        check(
            !is_redis_url(&st.users),
            "store.users",
            "Redis holds sessions and counters only, not users; use sqlite:// or postgres://",
        )?;
        check(st.pool_max >= 1, "store.pool_max", "must be >= 1")?;
        check(st.op_timeout_ms >= 1, "store.op_timeout_ms", "must be >= 1")?;
        check(st.connect_timeout_ms >= 1, "store.connect_timeout_ms", "must be >= 1")?;

        let a = &self.apps;
        check(!a.all.is_empty(), "apps.all", "must list at least one app")?;
        for app in &a.all {
            check(valid_app_name(app), "apps.all", "app names are 1..=64 characters without control characters")?;
        }
        check(a.all.contains(&a.default), "apps.default", "must be one of apps.all")?;
        check(!a.http_header.is_empty(), "apps.http_header", "must not be empty")?;
        for (key, list) in [
            ("apps.signup_allowed", &a.signup_allowed),
            ("apps.login_allowed", &a.login_allowed),
            ("apps.login_metadata_allowed", &a.login_metadata_allowed),
        ] {
            for app in list {
                check(a.all.contains(app), key, &format!("{app:?} is not in apps.all"))?;
            }
        }

        for (user, entry) in &self.user_address_list {
            entry.compile().map_err(|e| ConfigError::new(format!("user_address_list.{user}"), e))?;
        }

        let se = &self.session;
        check(se.expiry >= 1, "session.expiry", "must be >= 1")?;
        check(se.history_max <= 100, "session.history_max", "must be <= 100")?;

        let p = &self.password;
        check(p.max_length <= 1024, "password.max_length", "must be <= 1024")?;
        check(
            p.min_length >= 1 && p.min_length <= p.max_length,
            "password.min_length",
            "must be 1..=password.max_length",
        )?;
        check(p.min_complexity <= 4, "password.min_complexity", "must be 0..=4")?;
        let hp = p.hash_params();
        check(hp.t >= 1, "password.argon2_iterations", "must be >= 1")?;
        check((1..=16).contains(&hp.p), "password.argon2_parallelism", "must be 1..=16")?;
        check(hp.m_kib >= 8 * hp.p, "password.argon2_memory_kib", "must be >= 8 x parallelism")?;
        check(hp.m_kib <= 262_144, "password.argon2_memory_kib", "must be <= 262144")?;
        check(hp.t <= 20, "password.argon2_iterations", "must be <= 20")?;
        if !p.allow_weak_hash_params {
            check(
                hp.m_kib >= 19_456,
                "password.argon2_memory_kib",
                "must be >= 19456 (set password.allow_weak_hash_params for tests)",
            )?;
            check(
                hp.t >= 2,
                "password.argon2_iterations",
                "must be >= 2 (set password.allow_weak_hash_params for tests)",
            )?;
        }

        check(self.signup.max_length_username >= 1, "signup.max_length_username", "must be >= 1")?;
        check(self.signup.max_length_email >= 3, "signup.max_length_email", "must be >= 3")?;
        check(self.search.default_page_size >= 1, "search.default_page_size", "must be >= 1")?;
        check(self.search.max_page_size >= 1, "search.max_page_size", "must be >= 1")?;
        check(self.password_reset.valid_for >= 1, "password_reset.valid_for", "must be >= 1")?;

        let t = &self.totp;
        check(t.window_back <= 2, "totp.window_back", "must be 0..=2")?;
        check(t.window_ahead <= 2, "totp.window_ahead", "must be 0..=2")?;
        check(!t.issuer.is_empty() && !t.issuer.contains(':'), "totp.issuer", "must be non-empty and without ':'")?;
        check(!t.issuer.chars().any(char::is_control), "totp.issuer", "must not contain control characters")?;

        let th = &self.throttle;
        check(th.ipv6_prefix <= 128, "throttle.ipv6_prefix", "must be 0..=128")?;
        for (class, pol, cap) in [("user", &th.user, true), ("ip", &th.ip, false), ("totp", &th.totp, true)] {
            check(pol.lockout_after >= 1, &format!("throttle.{class}.lockout_after"), "must be >= 1")?;
            if cap {
                check(pol.lockout_after <= 100, &format!("throttle.{class}.lockout_after"), "must be <= 100")?;
            }
            check(
                pol.free_attempts < pol.lockout_after,
                &format!("throttle.{class}.free_attempts"),
                "must be < lockout_after",
            )?;
            check(pol.window_s >= 1, &format!("throttle.{class}.window_s"), "must be >= 1")?;
            check(
                pol.max_delay_s >= pol.base_delay_s,
                &format!("throttle.{class}.max_delay_s"),
                "must be >= base_delay_s",
            )?;
        }

        let au = &self.audit;
        if !au.query_sink.is_empty() {
            check(
                au.sinks.iter().any(|s| s.as_str() == au.query_sink),
                "audit.query_sink",
                "must name a sink listed in audit.sinks",
            )?;
        }
        check(au.file.max_files >= 1, "audit.file.max_files", "must be >= 1")?;
        check(au.file.max_size_mb >= 1, "audit.file.max_size_mb", "must be >= 1")?;
        check(
            au.sql.table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !au.sql.table.is_empty(),
            "audit.sql.table",
            "must be a plain identifier",
        )?;

        let n = &self.notify;
        for e in &n.events {
            check(NOTIFY_EVENTS.contains(&e.as_str()), "notify.events", &format!("unknown event {e:?}"))?;
        }

        check(self.attr.max_per_call >= 1, "attr.max_per_call", "must be >= 1")?;
        check(self.attr.max_value_bytes >= 1, "attr.max_value_bytes", "must be >= 1")?;
        Ok(())
    }

    /// A configuration for tests and examples: memory stores, weak (fast) hashing parameters.
    pub fn for_tests() -> Config {
        let mut c = Config::default();
        c.store.users = "memory://".into();
        c.password.allow_weak_hash_params = true;
        c.password.argon2_memory_kib = 64;
        c.password.argon2_iterations = 1;
        c.password.reject_common = true;
        c.audit.sinks = Vec::new();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        Config::for_tests().validate().unwrap();
    }

    #[test]
    fn ranges_are_checked() {
        let mut c = Config::default();
        c.totp.window_back = 3;
        assert_eq!(c.validate().unwrap_err().key, "totp.window_back");
        let mut c = Config::default();
        c.throttle.totp.lockout_after = 0;
        assert_eq!(c.validate().unwrap_err().to_string(), "config error: throttle.totp.lockout_after: must be >= 1");
        let mut c = Config::default();
        c.store.users = "redis://localhost".into();
        assert_eq!(c.validate().unwrap_err().key, "store.users");
        let mut c = Config::default();
        c.password.argon2_memory_kib = 1024;
        assert_eq!(c.validate().unwrap_err().key, "password.argon2_memory_kib");
        let mut c = Config::default();
        c.user_address_list.insert("bob".into(), AddressEntry::List(vec!["10.0.0.0/33".into()]));
        assert_eq!(c.validate().unwrap_err().key, "user_address_list.bob");
    }

    #[test]
    fn partial_throttle_sections_keep_class_defaults() {
        let c: Config = toml::from_str("[throttle.totp]\nlockout_s = 5\n").unwrap();
        assert_eq!(c.throttle.totp.lockout_s, 5);
        assert_eq!(c.throttle.totp.lockout_after, 5);
        assert_eq!(c.throttle.totp.base_delay_s, 30);
        assert_eq!(c.throttle.ip.free_attempts, 20);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[totp]\nwindow = 1\n").is_err());
        assert!(toml::from_str::<Config>("[nope]\n").is_err());
    }

    #[test]
    fn address_entries() {
        let c: Config =
            toml::from_str("[user_address_list]\n\"alice.smith\" = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nbob = \"*\"\n")
                .unwrap();
        c.validate().unwrap();
        assert!(c.user_address_list["bob"].compile().unwrap().is_none());
        assert_eq!(c.user_address_list["alice.smith"].compile().unwrap().unwrap().len(), 2);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = Config::default();
        c.crypto.key_ring_inline = "SECRETRING".into();
        c.notify.webhook_secret = "SECRETHOOK".into();
        let s = format!("{c:?}");
        assert!(!s.contains("SECRETRING") && !s.contains("SECRETHOOK"));
    }
}
