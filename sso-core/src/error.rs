//! Status codes, the error every operation returns, and the error every store returns.
//!
//! The codes are Zato's (`E00xxxx`, `W003005`); their meaning is in spec/concepts.md §3.
//! An error never carries a secret: the variants hold codes, reasons and static names only.

use std::fmt;
use std::time::Duration;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident => ($text:literal, $name:literal) ),* $(,)?) => {
        /// A status or sub-status code of the Zato SSO API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as it appears on the wire, e.g. `E005001`.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $text, )* }
            }

            /// The code's dotted name, e.g. `auth.not_allowed`.
            pub fn name(self) -> &'static str {
                match self { $( Code::$variant => $name, )* }
            }

            /// Parses the wire form of a code.
            pub fn parse(s: &str) -> Option<Code> {
                match s { $( $text => Some(Code::$variant), )* _ => None }
            }
        }
    };
}

codes! {
    /// Username missing, empty, with control characters, or rejected at sign-up.
    E001001 => ("E001001", "username.invalid"),
    /// Username taken.
    E001002 => ("E001002", "username.exists"),
    /// Username too long.
    E001003 => ("E001003", "username.too_long"),
    /// Username contains whitespace.
    E001004 => ("E001004", "username.has_whitespace"),
    /// Reserved, never raised.
    E001100 => ("E001100", "user_id.invalid"),
    /// E-mail syntax invalid or rejected.
    E002001 => ("E002001", "email.invalid"),
    /// E-mail already used (sign-up).
    E002002 => ("E002002", "email.exists"),
    /// E-mail too long.
    E002003 => ("E002003", "email.too_long"),
    /// E-mail contains whitespace.
    E002004 => ("E002004", "email.has_whitespace"),
    /// E-mail missing at sign-up.
    E002005 => ("E002005", "email.missing"),
    /// Password rejected by the policy.
    E003001 => ("E003001", "password.invalid"),
    /// Password too short.
    E003002 => ("E003002", "password.too_short"),
    /// Password too long.
    E003003 => ("E003003", "password.too_long"),
    /// Password expired.
    E003004 => ("E003004", "password.expired"),
    /// Login warning: password about to expire.
    W003005 => ("W003005", "password.w_about_to_exp"),
    /// Login refused: password about to expire.
    E003006 => ("E003006", "password.e_about_to_exp"),
    /// The password must be changed and no new one was sent.
    E003007 => ("E003007", "password.must_send_new"),
    /// Password not complex enough.
    E003008 => ("E003008", "password.not_complex_enough"),
    /// `current_app` invalid.
    E004001 => ("E004001", "app_list.invalid"),
    /// App may not sign users up.
    E004002 => ("E004002", "app_list.no_signup"),
    /// The generic refusal.
    E005001 => ("E005001", "auth.not_allowed"),
    /// User locked.
    E005002 => ("E005002", "auth.locked"),
    /// Sign-up not confirmed.
    E005003 => ("E005003", "auth.invalid_signup_status"),
    /// User not approved.
    E005004 => ("E005004", "auth.not_approved"),
    /// Reserved, never raised.
    E005005 => ("E005005", "auth.super_user_required"),
    /// Unknown sign-up confirmation token.
    E005006 => ("E005006", "auth.no_such_sign_up_token"),
    /// Sign-up already confirmed.
    E005007 => ("E005007", "auth.sign_up_confirmed"),
    /// TOTP code missing.
    E005008 => ("E005008", "auth.totp_missing"),
    /// Re-authentication required (session too old for an own TOTP reset).
    E005009 => ("E005009", "auth.reauth_required"),
    /// Reserved, never raised.
    E006001 => ("E006001", "metadata.not_allowed"),
    /// No such session.
    E007001 => ("E007001", "session.no_such_session"),
    /// Reserved, never raised.
    E007002 => ("E007002", "session.expired"),
    /// Invalid operation.
    E008001 => ("E008001", "common.invalid_operation"),
    /// Invalid input.
    E008002 => ("E008002", "common.invalid_input"),
    /// Missing input.
    E008003 => ("E008003", "common.missing_input"),
    /// Internal error (Rust API only).
    E008004 => ("E008004", "common.internal_error"),
    /// Attribute already exists.
    E009001 => ("E009001", "attr.already_exists"),
    /// No such attribute.
    E009002 => ("E009002", "attr.no_such_attr"),
    /// Password-reset token or key not usable.
    E010001 => ("E010001", "password_reset.could_not_access"),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Code {
    /// Whether the code counts as `denied` (authentication, authorisation, throttling, account state)
    /// rather than `failure` in an audit record (spec/audit.md §1).
    pub fn is_denial(self) -> bool {
        matches!(self, Code::E003004 | Code::E003006 | Code::E003007 | Code::E010001)
            || self.as_str().starts_with("E004")
            || self.as_str().starts_with("E005")
            || self.as_str().starts_with("E006")
            || self.as_str().starts_with("E007")
    }
}

macro_rules! reasons {
    ($( $variant:ident => $text:literal ),* $(,)?) => {
        /// Machine-readable detail of an outcome, recorded in the audit trail (spec/audit.md §3).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(
                #[doc = concat!("`", $text, "`")]
                $variant,
            )*
        }

        impl Reason {
            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self { $( Reason::$variant => $text, )* }
            }

            /// Parses the wire form.
            pub fn parse(s: &str) -> Option<Reason> {
                match s { $( $text => Some(Reason::$variant), )* _ => None }
            }
        }
    };
}

reasons! {
    EmptyCredentials => "empty_credentials",
    UnknownUser => "unknown_user",
    BadPassword => "bad_password",
    TotpMissing => "totp_missing",
    TotpInvalid => "totp_invalid",
    TotpReplay => "totp_replay",
    Throttled => "throttled",
    AppInvalid => "app_invalid",
    AppNotAllowed => "app_not_allowed",
    AddressNotAllowed => "address_not_allowed",
    Locked => "locked",
    NotConfirmed => "not_confirmed",
    NotApproved => "not_approved",
    PasswordExpired => "password_expired",
    PasswordAboutToExpire => "password_about_to_expire",
    MustChange => "must_change",
    NewPasswordInvalid => "new_password_invalid",
    NotSuperUser => "not_super_user",
    NotOwner => "not_owner",
    NoSuchUser => "no_such_user",
    NoSuchSession => "no_such_session",
    ReauthRequired => "reauth_required",
    InvalidInput => "invalid_input",
    Conflict => "conflict",
    NotFound => "not_found",
    DecryptFailed => "decrypt_failed",
    AuditFailed => "audit_failed",
    StoreUnavailable => "store_unavailable",
    Internal => "internal",
}

/// The error of every `Sso` operation (spec/concepts.md §1, "Errors").
///
/// `Display` never includes a secret or an internal detail; it is safe to log and to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsoError {
    /// An SSO rule refused the call: REST answers 403 with the envelope.
    #[error("{code} {}", code.name())]
    Validation {
        /// The real code (already selected by the `inform_if_*` flags where they apply).
        code: Code,
        /// Whether an unauthenticated endpoint may show `code` (else it shows `E005001`).
        public: bool,
        /// Audit detail.
        reason: Reason,
    },
    /// Too many failures for a throttle key: REST answers 429 with `E005001` and `Retry-After`.
    #[error("throttled; retry after {}s", retry_after.as_secs())]
    Throttled {
        /// How long until the key unblocks.
        retry_after: Duration,
    },
    /// A required field is missing or has the wrong type (HTTP layer): REST answers 400.
    #[error("bad input: {field}")]
    BadInput {
        /// The offending field's name.
        field: String,
    },
    /// A backend (store, audit sink, key ring, hashing queue) is unavailable: REST answers 503.
    #[error("{backend} unavailable")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
    },
    /// An internal error: REST answers 500 with no detail.
    #[error("internal error")]
    Internal {
        /// Audit detail (`internal` or `decrypt_failed`).
        reason: Reason,
    },
}

impl SsoError {
    /// A refusal with `code`, shown as is on every endpoint.
    pub fn code(code: Code, reason: Reason) -> Self {
        SsoError::Validation { code, public: true, reason }
    }

    /// A refusal with `code` that unauthenticated endpoints show only when `public`.
    pub fn code_public(code: Code, public: bool, reason: Reason) -> Self {
        SsoError::Validation { code, public, reason }
    }

    /// The generic refusal `E005001`.
    pub fn not_allowed(reason: Reason) -> Self {
        SsoError::code(Code::E005001, reason)
    }

    /// `E008002 common.invalid_input`.
    pub fn invalid_input() -> Self {
        SsoError::code(Code::E008002, Reason::InvalidInput)
    }

    /// An internal error.
    pub fn internal() -> Self {
        SsoError::Internal { reason: Reason::Internal }
    }

    /// The real code: the validation code, `E005001` when throttled, `E008004` for internal errors.
    pub fn real_code(&self) -> Code {
        match self {
            SsoError::Validation { code, .. } => *code,
            SsoError::Throttled { .. } => Code::E005001,
            SsoError::BadInput { .. } => Code::E008002,
            SsoError::Unavailable { .. } | SsoError::Internal { .. } => Code::E008004,
        }
    }

    /// The code an unauthenticated endpoint shows: the real one when public, else `E005001`.
    pub fn unauthenticated_code(&self) -> Code {
        match self {
            SsoError::Validation { code, public: true, .. } => *code,
            _ => Code::E005001,
        }
    }

    /// The audit reason of this error.
    pub fn reason(&self) -> Reason {
        match self {
            SsoError::Validation { reason, .. } => *reason,
            SsoError::Throttled { .. } => Reason::Throttled,
            SsoError::BadInput { .. } => Reason::InvalidInput,
            SsoError::Unavailable { .. } => Reason::StoreUnavailable,
            SsoError::Internal { reason } => *reason,
        }
    }

    /// Whether this error is an `E...` validation with the given code.
    pub fn is_code(&self, c: Code) -> bool {
        matches!(self, SsoError::Validation { code, .. } if *code == c)
    }
}

/// The error of every store method (spec/storage.md §1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The row or record does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness violation; `what` names the unique key (e.g. `username`).
    #[error("conflict on {what}")]
    Conflict {
        /// The unique key that was violated.
        what: &'static str,
    },
    /// The backend cannot be reached or timed out. `detail` is for logs and never holds credentials.
    #[error("store unavailable: {detail}")]
    Unavailable {
        /// A description for logs.
        detail: String,
    },
    /// A stored value cannot be decoded.
    #[error("corrupt data: {detail}")]
    Corrupt {
        /// A description for logs.
        detail: String,
    },
}

impl StoreError {
    /// Shorthand for [`StoreError::Unavailable`].
    pub fn unavailable(detail: impl Into<String>) -> Self {
        StoreError::Unavailable { detail: detail.into() }
    }

    /// Shorthand for [`StoreError::Corrupt`].
    pub fn corrupt(detail: impl Into<String>) -> Self {
        StoreError::Corrupt { detail: detail.into() }
    }
}

impl From<StoreError> for SsoError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => SsoError::code(Code::E008001, Reason::NotFound),
            StoreError::Conflict { .. } => SsoError::code(Code::E008001, Reason::Conflict),
            StoreError::Unavailable { detail } => {
                tracing::warn!(%detail, "store unavailable");
                SsoError::Unavailable { backend: "store" }
            }
            StoreError::Corrupt { detail } => {
                tracing::error!(%detail, "corrupt store data");
                SsoError::internal()
            }
        }
    }
}

/// Result alias for `Sso` operations.
pub type SsoResult<T> = Result<T, SsoError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()));
            assert_eq!(Code::parse(c.as_str()), Some(*c));
        }
        assert_eq!(Code::ALL.len(), 39);
    }

    #[test]
    fn denial_classes() {
        assert!(Code::E005001.is_denial());
        assert!(Code::E007001.is_denial());
        assert!(Code::E003004.is_denial());
        assert!(!Code::E008002.is_denial());
        assert!(!Code::E003001.is_denial());
    }

    #[test]
    fn hidden_codes_show_as_generic() {
        let e = SsoError::code_public(Code::E001002, false, Reason::Conflict);
        assert_eq!(e.unauthenticated_code(), Code::E005001);
        assert_eq!(e.real_code(), Code::E001002);
    }
}
