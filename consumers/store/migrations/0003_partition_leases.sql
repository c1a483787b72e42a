-- 0003: partition leases, the fence against a stalled worker's late commit.
--
-- One row per topic partition. A worker that is assigned a partition increments its epoch (and
-- names itself the owner) in one statement; every batch transaction then locks the rows of the
-- partitions it writes (FOR SHARE) and checks that the epochs are still the ones it was given.
-- A worker that stalled past a rebalance finds a higher epoch and rolls back: only the latest
-- owner can commit clocks, audit rows and positions of a partition.
--
-- Additive: workers of the release before it still run on it (without the fence).
-- oldest worker: 2
CREATE TABLE partition_leases (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    epoch           bigint NOT NULL CHECK (epoch > 0),
    owner           text NOT NULL,   -- host, process id and a random tag: for people, not logic
    acquired_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);
