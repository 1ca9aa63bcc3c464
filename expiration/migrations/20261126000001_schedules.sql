-- One entry per order: when its time to pay runs out. Firing appends
-- expiration.complete to the outbox and retires the entry in one transaction.
CREATE TABLE schedules (
    order_id   UUID        PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL,
    -- When the entry fired (null while pending); kept for audit and lateness figures.
    fired_at   TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX schedules_pending ON schedules (expires_at) WHERE fired_at IS NULL;

-- Wakes the scheduler when a new entry may be due sooner than the one it waits for.
CREATE FUNCTION schedules_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('schedules', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_notify AFTER INSERT ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION schedules_notify();
