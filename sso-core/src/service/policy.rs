//! Pure input rules: usernames, e-mails, passwords, TOTP labels, attribute names and link syntax
//! (spec/users.md §2, §5, §10, §11; spec/totp.md §5). No store access here.

use std::collections::HashSet;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;

use crate::config::{Config, PasswordConfig};
use crate::error::Code;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../../data/common-passwords.txt").lines().filter(|l| !l.is_empty()).collect());

/// Whether `password` (any case) is in the bundled list of common passwords.
pub fn is_common_password(password: &str) -> bool {
    COMMON.contains(password.to_lowercase().as_str())
}

/// Number of entries in the bundled common-password list.
pub fn common_password_count() -> usize {
    COMMON.len()
}

/// Context for the password rules that look at the user.
#[derive(Debug, Default, Clone, Copy)]
pub struct PasswordContext<'a> {
    /// The username, if known.
    pub username: Option<&'a str>,
    /// The e-mail, if known (zxcvbn user input).
    pub email: Option<&'a str>,
    /// Names (zxcvbn user inputs).
    pub names: [Option<&'a str>; 4],
}

/// `validate_password` (spec/users.md §5): NFKC, lengths in scalar values, block-lists, username,
/// complexity. Pure, not audited. Returns the first failing code.
pub fn validate_password(cfg: &PasswordConfig, password: &str, ctx: PasswordContext<'_>) -> Result<(), Code> {
    if password.len() > cfg.max_length.saturating_mul(4) {
        return Err(Code::E003003);
    }
    let norm: String = password.nfkc().collect();
    let len = norm.chars().count();
    if len < cfg.min_length {
        return Err(Code::E003002);
    }
    if len > cfg.max_length {
        return Err(Code::E003003);
    }
    if norm.contains('\u{0}') {
        return Err(Code::E003001);
    }
    let lower = norm.to_lowercase();
    if cfg.reject_list.iter().any(|r| !r.is_empty() && lower.contains(&r.to_lowercase())) {
        return Err(Code::E003001);
    }
    if cfg.reject_common && is_common_password(&lower) {
        return Err(Code::E003001);
    }
    if cfg.reject_if_contains_username
        && let Some(u) = ctx.username
        && u.chars().count() >= 3
        && lower.contains(&u.to_lowercase())
    {
        return Err(Code::E003001);
    }
    if cfg.min_complexity > 0 {
        complexity(&norm, cfg.min_complexity, ctx)?;
    }
    Ok(())
}

#[cfg(feature = "complexity")]
fn complexity(norm: &str, min: u8, ctx: PasswordContext<'_>) -> Result<(), Code> {
    let mut inputs: Vec<&str> = Vec::new();
    inputs.extend(ctx.username);
    inputs.extend(ctx.email);
    inputs.extend(ctx.names.iter().flatten());
    let score = u8::from(zxcvbn::zxcvbn(norm, &inputs).score());
    if score < min { Err(Code::E003008) } else { Ok(()) }
}

#[cfg(not(feature = "complexity"))]
fn complexity(_norm: &str, _min: u8, _ctx: PasswordContext<'_>) -> Result<(), Code> {
    // Without the `complexity` feature nothing can be scored: refuse rather than pass silently.
    Err(Code::E003008)
}

/// Username syntax for `create_user` / update: present, no control characters (E001001), no
/// whitespace (E001004), length (E001003).
pub fn check_username(cfg: &Config, username: &str) -> Result<(), Code> {
    if username.is_empty() || username.chars().any(char::is_control) {
        return Err(Code::E001001);
    }
    if username.chars().any(char::is_whitespace) {
        return Err(Code::E001004);
    }
    if username.chars().count() > cfg.signup.max_length_username {
        return Err(Code::E001003);
    }
    Ok(())
}

/// E-mail syntax: no whitespace (E002004), length (E002003), exactly one `@` and no control
/// characters (E002001).
pub fn check_email(cfg: &Config, email: &str) -> Result<(), Code> {
    if email.chars().any(char::is_whitespace) {
        return Err(Code::E002004);
    }
    if email.chars().count() > cfg.signup.max_length_email {
        return Err(Code::E002003);
    }
    if email.matches('@').count() != 1 || email.chars().any(char::is_control) {
        return Err(Code::E002001);
    }
    Ok(())
}

/// Whether `s` contains any of `list` as a case-insensitive substring.
pub fn contains_any_ci(s: &str, list: &[String]) -> bool {
    let l = s.to_lowercase();
    list.iter().any(|r| !r.is_empty() && l.contains(&r.to_lowercase()))
}

/// TOTP label: 1..=256 characters, no control characters, no `:`.
pub fn valid_label(label: &str) -> bool {
    let n = label.chars().count();
    (1..=256).contains(&n) && !label.chars().any(|c| c.is_control() || c == ':')
}

/// Attribute name: 1..=191 characters without control characters.
pub fn valid_attr_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=191).contains(&n) && !name.chars().any(char::is_control)
}

/// `auth_type`: `^[a-z][a-z0-9_.-]{0,63}$`.
pub fn valid_auth_type(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some('a'..='z'))
        && t.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// `auth_username`: 1..=256 characters without control characters.
pub fn valid_auth_username(u: &str) -> bool {
    let n = u.chars().count();
    (1..=256).contains(&n) && !u.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PasswordConfig {
        PasswordConfig::default()
    }

    fn check(p: &str) -> Result<(), Code> {
        validate_password(&cfg(), p, PasswordContext::default())
    }

    #[test]
    fn lengths_in_code_points() {
        assert_eq!(check("abcdefg"), Err(Code::E003002));
        assert_eq!(check("kx8#Lm2q"), Ok(()));
        assert_eq!(check(&"kq".repeat(32)), Ok(()));
        assert_eq!(check(&"😀".repeat(8)), Ok(()));
        assert_eq!(check(&"x".repeat(257)), Err(Code::E003003));
        assert_eq!(check(&"a".repeat(4096)), Err(Code::E003003));
    }

    #[test]
    fn no_composition_rules_spaces_kept() {
        assert_eq!(check("correct horse battery staple"), Ok(()));
    }

    #[test]
    fn block_lists() {
        assert_eq!(check("password1234"), Err(Code::E003001));
        assert_eq!(check("ILoveYou"), Err(Code::E003001));
        assert_eq!(check("abc\u{0}defgh"), Err(Code::E003001));
        let ctx = PasswordContext { username: Some("alice"), ..Default::default() };
        assert_eq!(validate_password(&cfg(), "alice-alice-alice", ctx), Err(Code::E003001));
        assert!(common_password_count() >= 10_000);
    }

    #[test]
    fn complexity_when_enabled() {
        let mut c = cfg();
        c.min_complexity = 3;
        c.reject_common = false;
        c.reject_list.clear();
        assert_eq!(validate_password(&c, "aaaaaaaa", PasswordContext::default()), Err(Code::E003008));
        assert_eq!(validate_password(&c, "Tr0ub4dour&3-xq!Zp9", PasswordContext::default()), Ok(()));
    }

    #[test]
    fn usernames_and_emails() {
        let c = Config::default();
        assert_eq!(check_username(&c, ""), Err(Code::E001001));
        assert_eq!(check_username(&c, "a\u{7}b"), Err(Code::E001001));
        assert_eq!(check_username(&c, "a b"), Err(Code::E001004));
        assert_eq!(check_username(&c, &"a".repeat(129)), Err(Code::E001003));
        assert_eq!(check_username(&c, "alice"), Ok(()));
        assert_eq!(check_email(&c, "a b@c"), Err(Code::E002004));
        assert_eq!(check_email(&c, "a@b@c"), Err(Code::E002001));
        assert_eq!(check_email(&c, "ab.c"), Err(Code::E002001));
        assert_eq!(check_email(&c, "a@b.c"), Ok(()));
    }

    #[test]
    fn labels_and_links() {
        assert!(valid_label("Work laptop"));
        assert!(!valid_label("a:b"));
        assert!(!valid_label(""));
        assert!(!valid_label(&"x".repeat(257)));
        assert!(valid_auth_type("oidc.google"));
        assert!(!valid_auth_type("Basic"));
        assert!(!valid_auth_type("1x"));
    }
}
