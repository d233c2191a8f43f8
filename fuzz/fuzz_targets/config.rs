//! The configuration loader: any TOML text over the defaults either loads and validates or is
//! refused with a `ConfigError`; a loaded configuration survives its redacted round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = sso_http::config::from_toml_str(text) {
        let shown = sso_http::config::redacted_toml(&cfg);
        assert!(shown.parse::<toml::Table>().is_ok(), "the redacted configuration is TOML");
    }
});
