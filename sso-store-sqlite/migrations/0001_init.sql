-- sso schema for SQLite (spec/storage.md §3): times are INTEGER Unix microseconds, booleans
-- INTEGER 0/1, JSON as TEXT, hashes as BLOB. Text compares byte-wise (BINARY collation).

CREATE TABLE sso_user (
    user_id                  TEXT    NOT NULL PRIMARY KEY,
    username                 TEXT    NOT NULL UNIQUE,
    password_hash            TEXT    NOT NULL,
    password_is_set          INTEGER NOT NULL,
    password_must_change     INTEGER NOT NULL,
    password_last_set        INTEGER NOT NULL,
    password_expiry          INTEGER,
    email_enc                TEXT,
    email_idx                TEXT,
    display_name             TEXT,
    first_name               TEXT,
    middle_name              TEXT,
    last_name                TEXT,
    display_name_upper       TEXT,
    first_name_upper         TEXT,
    middle_name_upper        TEXT,
    last_name_upper          TEXT,
    is_active                INTEGER NOT NULL DEFAULT 1,
    is_internal              INTEGER NOT NULL DEFAULT 0,
    is_super_user            INTEGER NOT NULL,
    is_locked                INTEGER NOT NULL,
    locked_time              INTEGER,
    locked_by                TEXT,
    approval_status          TEXT    NOT NULL,
    approval_status_mod_time INTEGER NOT NULL,
    approval_status_mod_by   TEXT    NOT NULL,
    sign_up_status           TEXT    NOT NULL,
    sign_up_time             INTEGER NOT NULL,
    sign_up_confirm_time     INTEGER,
    confirm_token_hash       BLOB UNIQUE,
    creation_ctx             TEXT    NOT NULL,
    is_totp_enabled          INTEGER NOT NULL,
    totp_key_enc             TEXT    NOT NULL,
    totp_label_enc           TEXT    NOT NULL,
    totp_key_gen             INTEGER NOT NULL,
    session_epoch            INTEGER NOT NULL
) STRICT;
CREATE INDEX sso_user_email_idx ON sso_user (email_idx);
CREATE INDEX sso_user_display_name_upper ON sso_user (display_name_upper);
CREATE INDEX sso_user_first_name_upper ON sso_user (first_name_upper);
CREATE INDEX sso_user_middle_name_upper ON sso_user (middle_name_upper);
CREATE INDEX sso_user_last_name_upper ON sso_user (last_name_upper);
CREATE INDEX sso_user_search_order ON sso_user (display_name, username, sign_up_time, user_id);

-- No foreign key to sso_user: sessions may live in another database than users. When they share
-- this one, deleting a user deletes its sessions in the same transaction (explicitly).
CREATE TABLE sso_session (
    session_id          TEXT    NOT NULL PRIMARY KEY,
    ust_hash            BLOB    NOT NULL UNIQUE,
    user_id             TEXT    NOT NULL,
    creation_time       INTEGER NOT NULL,
    expiration_time     INTEGER NOT NULL,
    abs_expiration_time INTEGER,
    epoch               INTEGER NOT NULL,
    remote_addr         TEXT    NOT NULL,
    user_agent          TEXT,
    current_app         TEXT    NOT NULL,
    auth_type           TEXT    NOT NULL,
    auth_principal      TEXT    NOT NULL,
    ext_session_id      TEXT    NOT NULL,
    history             TEXT    NOT NULL
) STRICT;
CREATE INDEX sso_session_user ON sso_session (user_id);
CREATE INDEX sso_session_expiration ON sso_session (expiration_time);

CREATE TABLE sso_user_attr (
    user_id         TEXT    NOT NULL REFERENCES sso_user (user_id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    is_encrypted    INTEGER NOT NULL,
    creation_time   INTEGER NOT NULL,
    last_modified   INTEGER NOT NULL,
    expiration_time INTEGER,
    PRIMARY KEY (user_id, name)
) STRICT;
CREATE INDEX sso_user_attr_expiration ON sso_user_attr (expiration_time);

CREATE TABLE sso_session_attr (
    session_id      TEXT    NOT NULL REFERENCES sso_session (session_id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    is_encrypted    INTEGER NOT NULL,
    creation_time   INTEGER NOT NULL,
    last_modified   INTEGER NOT NULL,
    expiration_time INTEGER,
    PRIMARY KEY (session_id, name)
) STRICT;
CREATE INDEX sso_session_attr_expiration ON sso_session_attr (expiration_time);

CREATE TABLE sso_linked_auth (
    auth_id       TEXT    NOT NULL PRIMARY KEY,
    user_id       TEXT    NOT NULL REFERENCES sso_user (user_id) ON DELETE CASCADE,
    auth_type     TEXT    NOT NULL,
    auth_username TEXT    NOT NULL,
    is_active     INTEGER NOT NULL,
    creation_time INTEGER NOT NULL,
    last_modified INTEGER NOT NULL,
    UNIQUE (auth_type, auth_username)
) STRICT;
CREATE INDEX sso_linked_auth_user ON sso_linked_auth (user_id);

CREATE TABLE sso_password_reset (
    token_hash          BLOB    NOT NULL PRIMARY KEY,
    user_id             TEXT    NOT NULL REFERENCES sso_user (user_id) ON DELETE CASCADE,
    creation_time       INTEGER NOT NULL,
    expiration_time     INTEGER NOT NULL,
    creation_ctx        TEXT    NOT NULL,
    has_been_accessed   INTEGER NOT NULL,
    access_time         INTEGER,
    access_ctx          TEXT,
    reset_key_hash      BLOB,
    reset_key_exp_time  INTEGER,
    is_password_reset   INTEGER NOT NULL,
    password_reset_time INTEGER,
    password_reset_ctx  TEXT
) STRICT;
CREATE INDEX sso_password_reset_user ON sso_password_reset (user_id);
CREATE INDEX sso_password_reset_expiration ON sso_password_reset (expiration_time);

CREATE TABLE sso_counter (
    key        TEXT    NOT NULL PRIMARY KEY,
    value      INTEGER NOT NULL,
    last_at    INTEGER NOT NULL,
    prev_at    INTEGER,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sso_counter_expires ON sso_counter (expires_at);
