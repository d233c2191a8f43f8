-- Substring name search (is_name_exact = false) through trigram indexes, so it stays fast on large
-- user tables. pg_trgm is a trusted extension; where it cannot be created the search still works
-- (a sequential scan) and this migration does not fail.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available: substring name search will scan';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX sso_user_display_name_trgm ON sso_user USING gin (display_name_upper gin_trgm_ops);
        CREATE INDEX sso_user_first_name_trgm ON sso_user USING gin (first_name_upper gin_trgm_ops);
        CREATE INDEX sso_user_middle_name_trgm ON sso_user USING gin (middle_name_upper gin_trgm_ops);
        CREATE INDEX sso_user_last_name_trgm ON sso_user USING gin (last_name_upper gin_trgm_ops);
    END IF;
END
$$;
