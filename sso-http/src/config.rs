//! Loading the configuration (spec/config.md §1): built-in defaults < the TOML file
//! (`--config` or `SSO_CONFIG`, else `./sso.toml` if present) < `SSO_<SECTION>__<KEY>` environment
//! variables. Any problem becomes one [`ConfigError`] line naming the key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use sso_core::config::{Config, ConfigError};

/// Where the configuration came from (for `config check` and logs).
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The TOML file read, if any.
    pub file: Option<PathBuf>,
}

/// The file to read: `explicit` (from `--config`), else `SSO_CONFIG`, else `./sso.toml` when it
/// exists. A named file that does not exist is an error.
pub fn config_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    let named = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("SSO_CONFIG").map(PathBuf::from));
    match named {
        Some(p) if p.is_file() => Ok(Some(p)),
        Some(p) => Err(ConfigError::new("config", format!("file {} does not exist", p.display()))),
        None => {
            let default = PathBuf::from("sso.toml");
            Ok(default.is_file().then_some(default))
        }
    }
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() { "config".to_owned() } else { e.path.join(".") };
    let problem = match &e.kind {
        figment::error::Kind::UnknownField(f, _) => {
            let named = if e.path.last() == Some(f) || e.path.is_empty() && key == *f {
                key
            } else if e.path.is_empty() {
                f.clone()
            } else {
                format!("{key}.{f}")
            };
            return ConfigError::new(named, "unknown key");
        }
        other => other.to_string(),
    };
    ConfigError::new(key, problem)
}

/// Parses and validates a configuration text over the defaults, without the environment (the
/// loader's core, used by tests and the config fuzz target).
pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
    let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
    let cfg: Config = fig.extract().map_err(figment_error)?;
    cfg.validate()?;
    Ok(cfg)
}

/// Loads and validates the configuration.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Source), ConfigError> {
    let file = config_file(explicit)?;
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(f) = &file {
        fig = fig.merge(Toml::file_exact(f));
    }
    fig = fig.merge(Env::prefixed("SSO_").split("__").filter(|k| k.as_str() != "config"));
    let cfg: Config = fig.extract().map_err(figment_error)?;
    cfg.validate()?;
    Ok((cfg, Source { file }))
}

/// The effective configuration as TOML with secrets replaced by `"<redacted>"` (passwords inside
/// store URLs, `crypto.key_ring_inline`, `notify.webhook_secret`).
pub fn redacted_toml(cfg: &Config) -> String {
    let mut c = cfg.clone();
    for url in
        [&mut c.store.users, &mut c.store.sessions, &mut c.store.counters, &mut c.audit.sql.url, &mut c.audit.redis.url]
    {
        *url = redact_url(url);
    }
    if !c.crypto.key_ring_inline.is_empty() {
        c.crypto.key_ring_inline = "<redacted>".into();
    }
    if !c.notify.webhook_secret.is_empty() {
        c.notify.webhook_secret = "<redacted>".into();
    }
    toml::to_string(&c).unwrap_or_default()
}

/// Replaces the password of `scheme://user:password@host…` by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i + 1..).unwrap_or("")),
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://sso:s3cret@db/sso"), "postgres://sso:<redacted>@db/sso");
        assert_eq!(redact_url("sqlite://./sso.db"), "sqlite://./sso.db");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
