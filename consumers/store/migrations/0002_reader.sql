-- 0002: a read-only role and a view of the open clocks, for dashboards.
--
-- Roles belong to the whole server, not to one database: the role is created only when
-- missing, tolerating another database's migration creating it at the same moment. It is
-- NOLOGIN; grant it to a login role (GRANT crisiswatch_reader TO grafana) to use it.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'crisiswatch_reader') THEN
        BEGIN
            CREATE ROLE crisiswatch_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by another migration on this server
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO crisiswatch_reader', current_schema());
END
$$;

-- Open clocks as last reported by the worker; minutes_waiting is measured against now().
-- deadline: when the clock breaches (NULL for a 2-hour clock in triage-start mode that has
-- not started); next_change_at: its next live-state change (at risk, then breached).
CREATE VIEW live_open_clocks AS
SELECT
    referral_id,
    pathway,
    clock_type,
    region,
    icb,
    provider,
    clock_start,
    state,
    floor(extract(epoch FROM now() - clock_start) / 60)::integer AS minutes_waiting,
    coalesce(breach_at, next_change_at) AS deadline,
    next_change_at
FROM clocks
WHERE is_open AND state <> 'pending';

GRANT SELECT ON clocks, events, live_open_clocks TO crisiswatch_reader;
