CREATE TABLE tickets (
    id          UUID        PRIMARY KEY,
    title       TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL CHECK (price_cents > 0 AND price_cents <= 100000000),
    user_id     UUID        NOT NULL,
    -- The order reserving the ticket, if any (set and cleared by order events).
    order_id    UUID,
    -- Incremented exactly once by every change; replicas apply changes in this order.
    version     BIGINT      NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- `GET /api/tickets`: unreserved tickets, newest first.
CREATE INDEX tickets_unreserved_newest ON tickets (created_at DESC, id DESC) WHERE order_id IS NULL;
