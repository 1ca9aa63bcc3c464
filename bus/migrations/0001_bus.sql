-- Tables of the event bus, created in the database of every service on the bus.

-- Transactional outbox: an event is appended in the same transaction as the state
-- change it announces; the relay publishes committed rows in `seq` order and deletes
-- them once JetStream has acknowledged them.
CREATE TABLE outbox (
    seq        BIGSERIAL   PRIMARY KEY,
    event_id   UUID        NOT NULL UNIQUE,
    subject    TEXT        NOT NULL,
    payload    JSON        NOT NULL,  -- JSON, not JSONB: the bytes are published as written
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wakes the relay as soon as a transaction that appended events commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Ids of the events this service has handled, recorded in the handler's transaction:
-- a redelivered or duplicated event finds its id here and changes nothing.
CREATE TABLE processed_events (
    event_id     TEXT        PRIMARY KEY,
    subject      TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events that could not be handled within the allowed number of deliveries (or could
-- not be read at all). Kept for an operator to inspect and replay; never dropped.
CREATE TABLE parked_events (
    id         BIGSERIAL   PRIMARY KEY,
    event_id   TEXT,
    subject    TEXT        NOT NULL,
    payload    TEXT        NOT NULL,
    deliveries BIGINT      NOT NULL,
    error      TEXT        NOT NULL,
    parked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
