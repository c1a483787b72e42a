-- 0001: the system of record of the live worker (see consumers/postgres.py).
--
-- Identifiers use the "C" collation: byte order, which for UTF-8 is code-point order, so
-- ORDER BY referral_id agrees with Python's sorted() (CONTRACT section 2 row order) whatever
-- the database's default locale, and comparisons skip the locale library.

-- Every accepted event, once per event id (R8), as received (scrubbed of NHS numbers, unknown
-- fields kept). Append-only: the audit trail of what the monitor was told.
CREATE TABLE events (
    event_id        text COLLATE "C" PRIMARY KEY,
    referral_id     text COLLATE "C" NOT NULL,
    type            text NOT NULL,
    event_time      timestamptz NOT NULL,
    source          text NOT NULL,
    kafka_partition integer,
    kafka_offset    bigint,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    document        jsonb NOT NULL
);
CREATE INDEX events_referral_id_idx ON events (referral_id);
CREATE INDEX events_event_time_idx ON events (event_time);

CREATE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % is not allowed', TG_OP
        USING HINT = 'the audit log keeps every accepted event; correct data with new events';
END
$$;

-- Statement-level, so even an UPDATE/DELETE matching no row is refused, and so is
-- INSERT ... ON CONFLICT DO UPDATE (it fires UPDATE statement triggers). TRUNCATE needs the
-- TRUNCATE privilege, which only the owner has.
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- One row per referral: the CSDS-like view of its clock (CYP104 terms) and the engine state
-- the worker restores from. Rewritten each time the worker reports a change.
CREATE TABLE clocks (
    referral_id          text COLLATE "C" PRIMARY KEY,
    kafka_partition      integer,
    pathway              text,
    -- CSDS "waiting time measurement type": 05 UCR subject to the standard, 06 2-day
    -- reablement, 07 UCR not subject to it; NULL when there is no clock (cancelled, pending).
    clock_type           text CHECK (clock_type IN ('05', '06', '07')),
    region               text,
    icb                  text,
    provider             text,
    referral_received_at timestamptz,
    clock_start          timestamptz,
    clock_stop           timestamptz,
    -- bigint: event times may span 2000-2099, more seconds than an integer holds.
    wait_seconds         bigint,
    wait_minutes         integer,   -- floor(wait_seconds / 60)
    wait_nights          integer,   -- local (rules' time zone) midnights between start and stop
    -- When an open 05/06 clock becomes breached (2-hour: start + 120:01; 2-day: the local
    -- midnight ending the last allowed day), under the worker's rules.
    breach_at            timestamptz,
    state                text NOT NULL CHECK (state IN (
                             'met', 'not_met', 'waiting', 'at_risk', 'breached',
                             'excluded', 'cancelled', 'invalid', 'pending')),
    exclusion_reason     text,
    -- 'pending': events arrived before the referral.received that gives the clock meaning.
    is_open              boolean NOT NULL,
    contacts             integer NOT NULL DEFAULT 0,
    next_change_at       timestamptz,
    engine_state         jsonb NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clocks_is_open_matches_state
        CHECK (is_open = (state IN ('waiting', 'at_risk', 'breached', 'pending')))
);
-- Restart recovery reads the open clocks of the partitions a worker was assigned.
CREATE INDEX clocks_open_partition_idx ON clocks (kafka_partition) WHERE is_open;
CREATE INDEX clocks_state_idx ON clocks (state);
CREATE INDEX clocks_region_icb_idx ON clocks (region, icb);
CREATE INDEX clocks_clock_stop_idx ON clocks (clock_stop);
CREATE INDEX clocks_referral_received_at_idx ON clocks (referral_received_at);

-- The next Kafka offset to read per topic partition, committed in the same transaction as the
-- rows it produced: exactly-once effect on this database.
CREATE TABLE consumer_positions (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);
