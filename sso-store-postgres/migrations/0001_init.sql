-- sso schema for PostgreSQL (spec/storage.md §3): timestamptz, boolean, jsonb, bytea; binary
-- collation (COLLATE "C") on every ordered or compared text column.

CREATE TABLE sso_user (
    user_id                  text COLLATE "C" NOT NULL,
    username                 text COLLATE "C" NOT NULL,
    password_hash            text        NOT NULL,
    password_is_set          boolean     NOT NULL,
    password_must_change     boolean     NOT NULL,
    password_last_set        timestamptz NOT NULL,
    password_expiry          timestamptz,
    email_enc                text,
    email_idx                text COLLATE "C",
    display_name             text COLLATE "C",
    first_name               text COLLATE "C",
    middle_name              text COLLATE "C",
    last_name                text COLLATE "C",
    display_name_upper       text COLLATE "C",
    first_name_upper         text COLLATE "C",
    middle_name_upper        text COLLATE "C",
    last_name_upper          text COLLATE "C",
    is_active                boolean     NOT NULL DEFAULT true,
    is_internal              boolean     NOT NULL DEFAULT false,
    is_super_user            boolean     NOT NULL,
    is_locked                boolean     NOT NULL,
    locked_time              timestamptz,
    locked_by                text,
    approval_status          text        NOT NULL,
    approval_status_mod_time timestamptz NOT NULL,
    approval_status_mod_by   text        NOT NULL,
    sign_up_status           text        NOT NULL,
    sign_up_time             timestamptz NOT NULL,
    sign_up_confirm_time     timestamptz,
    confirm_token_hash       bytea,
    creation_ctx             jsonb       NOT NULL,
    is_totp_enabled          boolean     NOT NULL,
    totp_key_enc             text        NOT NULL,
    totp_label_enc           text        NOT NULL,
    totp_key_gen             bigint      NOT NULL,
    session_epoch            bigint      NOT NULL,
    CONSTRAINT sso_user_pkey PRIMARY KEY (user_id),
    CONSTRAINT sso_user_username_key UNIQUE (username),
    CONSTRAINT sso_user_confirm_token_hash_key UNIQUE (confirm_token_hash)
);
CREATE INDEX sso_user_email_idx ON sso_user (email_idx);
CREATE INDEX sso_user_display_name_upper ON sso_user (display_name_upper);
CREATE INDEX sso_user_first_name_upper ON sso_user (first_name_upper);
CREATE INDEX sso_user_middle_name_upper ON sso_user (middle_name_upper);
CREATE INDEX sso_user_last_name_upper ON sso_user (last_name_upper);
CREATE INDEX sso_user_search_order ON sso_user (display_name NULLS FIRST, username, sign_up_time, user_id);

-- No foreign key to sso_user: sessions may live in another store. When they share this database,
-- deleting a user deletes its sessions in the same transaction (explicitly).
CREATE TABLE sso_session (
    session_id          text COLLATE "C" NOT NULL,
    ust_hash            bytea       NOT NULL,
    user_id             text COLLATE "C" NOT NULL,
    creation_time       timestamptz NOT NULL,
    expiration_time     timestamptz NOT NULL,
    abs_expiration_time timestamptz,
    epoch               bigint      NOT NULL,
    remote_addr         text        NOT NULL,
    user_agent          text,
    current_app         text        NOT NULL,
    auth_type           text        NOT NULL,
    auth_principal      text        NOT NULL,
    ext_session_id      text        NOT NULL,
    history             jsonb       NOT NULL,
    CONSTRAINT sso_session_pkey PRIMARY KEY (session_id),
    CONSTRAINT sso_session_ust_hash_key UNIQUE (ust_hash)
);
CREATE INDEX sso_session_user ON sso_session (user_id);
CREATE INDEX sso_session_expiration ON sso_session (expiration_time);

CREATE TABLE sso_user_attr (
    user_id         text COLLATE "C" NOT NULL REFERENCES sso_user (user_id) ON DELETE CASCADE,
    name            text COLLATE "C" NOT NULL,
    value           text        NOT NULL,
    is_encrypted    boolean     NOT NULL,
    creation_time   timestamptz NOT NULL,
    last_modified   timestamptz NOT NULL,
    expiration_time timestamptz,
    PRIMARY KEY (user_id, name)
);
CREATE INDEX sso_user_attr_expiration ON sso_user_attr (expiration_time);

CREATE TABLE sso_session_attr (
    session_id      text COLLATE "C" NOT NULL REFERENCES sso_session (session_id) ON DELETE CASCADE,
    name            text COLLATE "C" NOT NULL,
    value           text        NOT NULL,
    is_encrypted    boolean     NOT NULL,
    creation_time   timestamptz NOT NULL,
    last_modified   timestamptz NOT NULL,
    expiration_time timestamptz,
    PRIMARY KEY (session_id, name)
);
CREATE INDEX sso_session_attr_expiration ON sso_session_attr (expiration_time);

CREATE TABLE sso_linked_auth (
    auth_id       text COLLATE "C" NOT NULL,
    user_id       text COLLATE "C" NOT NULL REFERENCES sso_user (user_id) ON DELETE CASCADE,
    auth_type     text COLLATE "C" NOT NULL,
    auth_username text COLLATE "C" NOT NULL,
    is_active     boolean     NOT NULL,
    creation_time timestamptz NOT NULL,
    last_modified timestamptz NOT NULL,
    CONSTRAINT sso_linked_auth_pkey PRIMARY KEY (auth_id),
    CONSTRAINT sso_linked_auth_principal UNIQUE (auth_type, auth_username)
);
CREATE INDEX sso_linked_auth_user ON sso_linked_auth (user_id);

CREATE TABLE sso_password_reset (
    token_hash          bytea       NOT NULL,
    user_id             text COLLATE "C" NOT NULL REFERENCES sso_user (user_id) ON DELETE CASCADE,
    creation_time       timestamptz NOT NULL,
    expiration_time     timestamptz NOT NULL,
    creation_ctx        jsonb       NOT NULL,
    has_been_accessed   boolean     NOT NULL,
    access_time         timestamptz,
    access_ctx          jsonb,
    reset_key_hash      bytea,
    reset_key_exp_time  timestamptz,
    is_password_reset   boolean     NOT NULL,
    password_reset_time timestamptz,
    password_reset_ctx  jsonb,
    CONSTRAINT sso_password_reset_pkey PRIMARY KEY (token_hash)
);
CREATE INDEX sso_password_reset_user ON sso_password_reset (user_id);
CREATE INDEX sso_password_reset_expiration ON sso_password_reset (expiration_time);

CREATE TABLE sso_counter (
    key        text COLLATE "C" NOT NULL PRIMARY KEY,
    value      bigint      NOT NULL,
    last_at    timestamptz NOT NULL,
    prev_at    timestamptz,
    expires_at timestamptz NOT NULL
);
CREATE INDEX sso_counter_expires ON sso_counter (expires_at);
