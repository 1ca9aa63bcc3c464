-- Failed attempts at handling an event, counted apart from deliveries: an event that
-- only waits for its predecessor is redelivered as often as it takes and is never
-- parked; one that fails is parked after EVENT_MAX_FAILURES attempts. Written outside
-- the handler's (rolled back) transaction; removed once the event is handled or parked.
CREATE TABLE event_failures (
    event_id        TEXT        PRIMARY KEY,
    subject         TEXT        NOT NULL,
    failures        BIGINT      NOT NULL,
    last_error      TEXT        NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_failed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An event is parked once, even if its termination is lost and it comes back.
DELETE FROM parked_events a USING parked_events b
    WHERE a.event_id = b.event_id AND a.id > b.id;
CREATE UNIQUE INDEX parked_events_event_id ON parked_events (event_id);

-- The pruning job deletes by age.
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
CREATE INDEX parked_events_parked_at ON parked_events (parked_at);

-- Deletes up to `batch` rows of `tbl` whose `col` is older than `horizon`; returns
-- how many. The pruning job of every service calls it for each table that only
-- grows (handled event ids, failures, parked events, and the service's own).
CREATE FUNCTION prune(tbl regclass, col name, horizon interval, batch integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    deleted bigint;
BEGIN
    EXECUTE format(
        'DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s WHERE %I < now() - $1 LIMIT $2))',
        tbl, tbl, col)
    USING horizon, batch;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;
