//! Notifications and the extension traits an embedder plugs in: `Notifier`, `SignupValidator`,
//! `SignupHook`, `SessionExpiryPolicy` (spec/config.md `[notify]`, spec/users.md §3).

use std::fmt;
use std::time::Duration;

use crate::error::Code;
use crate::ids::UserId;
use crate::secret::{Password, PrtToken};
use crate::time::Timestamp;

/// The kind of a notification event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A user signed up.
    Signup,
    /// A password-reset token was created (the only event that carries a secret: the token).
    PasswordReset,
    /// A password was changed.
    PasswordChanged,
    /// A TOTP key was reset.
    TotpReset,
    /// A user was locked.
    UserLocked,
}

impl EventKind {
    /// The event name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Signup => "signup",
            EventKind::PasswordReset => "password_reset",
            EventKind::PasswordChanged => "password_changed",
            EventKind::TotpReset => "totp_reset",
            EventKind::UserLocked => "user_locked",
        }
    }
}

/// A notification event. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct Event {
    /// Which event.
    pub kind: EventKind,
    /// When.
    pub ts: Timestamp,
    /// The call's cid.
    pub cid: String,
    /// The call's app.
    pub current_app: String,
    /// The call's client address.
    pub remote_addr: String,
    /// The user concerned.
    pub user_id: UserId,
    /// Their username.
    pub username: String,
    /// Their e-mail (decrypted), if any.
    pub email: Option<String>,
    /// Who acted (`totp_reset`, `user_locked`).
    pub actor: Option<String>,
    /// The PRT (`password_reset` only).
    pub token: Option<PrtToken>,
    /// The PRT's expiry (`password_reset` only).
    pub expiration_time: Option<Timestamp>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("cid", &self.cid)
            .field("user_id", &self.user_id)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

/// Receives events after their operation committed. Must not block: queue the work.
/// Failures are the notifier's to log; they never change an operation's result.
pub trait Notifier: Send + Sync {
    /// Hands over one event.
    fn notify(&self, event: Event);
}

/// A notifier that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _event: Event) {}
}

/// A notifier that keeps every event (tests, demos).
#[derive(Debug, Default)]
pub struct CollectingNotifier {
    events: std::sync::Mutex<Vec<Event>>,
}

impl CollectingNotifier {
    /// Events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Notifier for CollectingNotifier {
    fn notify(&self, event: Event) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }
}

/// The sign-up data a validator sees (the password is there for strength checks; never log it).
#[derive(Debug)]
pub struct SignupData<'a> {
    /// Username.
    pub username: &'a str,
    /// E-mail.
    pub email: Option<&'a str>,
    /// Password.
    pub password: &'a Password,
    /// App list.
    pub app_list: &'a [String],
}

/// An embedder's extra sign-up check (Zato's `user_validation.service`).
pub trait SignupValidator: Send + Sync {
    /// `Err(code)` refuses the sign-up with that code.
    fn validate(&self, data: &SignupData<'_>) -> Result<(), Code>;
}

/// Runs after a sign-up committed (Zato's `signup.callback_service_list`). Must not block.
pub trait SignupHook: Send + Sync {
    /// Called with the new user's id and username.
    fn on_signup(&self, user_id: &UserId, username: &str);
}

/// Chooses a session's idle lifetime per app and user (Zato's `session.expiry_hook`).
pub trait SessionExpiryPolicy: Send + Sync {
    /// `None` = `session.expiry`.
    fn expiry(&self, current_app: &str, user_id: &UserId, username: &str) -> Option<Duration>;
}
