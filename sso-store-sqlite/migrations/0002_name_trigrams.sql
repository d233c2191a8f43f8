-- Substring name search without a full scan (spec/users.md search: a name part contains the value,
-- compared on the upper-cased columns). An FTS5 index of trigrams over the four *_upper columns
-- narrows the candidates; the search still applies `instr` to them, so the answer is exactly the
-- unindexed one. Values shorter than three characters have no trigram and keep the scan.
--
-- The FTS rows are keyed by `sso_user_name_key.fts_rowid`, an INTEGER PRIMARY KEY (stable across
-- VACUUM, unlike `sso_user`'s implicit rowid), kept in step by the triggers below.

CREATE TABLE sso_user_name_key (
    fts_rowid INTEGER PRIMARY KEY,
    user_id   TEXT    NOT NULL UNIQUE
);

CREATE VIRTUAL TABLE sso_user_name_fts USING fts5(
    display_name_upper, first_name_upper, middle_name_upper, last_name_upper,
    tokenize = 'trigram case_sensitive 1'
);

INSERT INTO sso_user_name_key (user_id) SELECT user_id FROM sso_user;

INSERT INTO sso_user_name_fts (rowid, display_name_upper, first_name_upper, middle_name_upper, last_name_upper)
SELECT k.fts_rowid, u.display_name_upper, u.first_name_upper, u.middle_name_upper, u.last_name_upper
FROM sso_user u JOIN sso_user_name_key k ON k.user_id = u.user_id;

CREATE TRIGGER sso_user_name_ai AFTER INSERT ON sso_user BEGIN
    INSERT INTO sso_user_name_key (user_id) VALUES (new.user_id);
    INSERT INTO sso_user_name_fts (rowid, display_name_upper, first_name_upper, middle_name_upper, last_name_upper)
    VALUES ((SELECT fts_rowid FROM sso_user_name_key WHERE user_id = new.user_id),
            new.display_name_upper, new.first_name_upper, new.middle_name_upper, new.last_name_upper);
END;

CREATE TRIGGER sso_user_name_au
AFTER UPDATE OF display_name_upper, first_name_upper, middle_name_upper, last_name_upper ON sso_user BEGIN
    UPDATE sso_user_name_fts
    SET display_name_upper = new.display_name_upper, first_name_upper = new.first_name_upper,
        middle_name_upper = new.middle_name_upper, last_name_upper = new.last_name_upper
    WHERE rowid = (SELECT fts_rowid FROM sso_user_name_key WHERE user_id = new.user_id);
END;

CREATE TRIGGER sso_user_name_ad AFTER DELETE ON sso_user BEGIN
    DELETE FROM sso_user_name_fts WHERE rowid = (SELECT fts_rowid FROM sso_user_name_key WHERE user_id = old.user_id);
    DELETE FROM sso_user_name_key WHERE user_id = old.user_id;
END;
