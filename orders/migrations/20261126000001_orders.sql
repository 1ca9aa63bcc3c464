-- Replica of the tickets service's tickets, fed by ticket.created / ticket.updated and
-- applied strictly in version order.
CREATE TABLE tickets (
    id          UUID        PRIMARY KEY,
    title       TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL,
    version     BIGINT      NOT NULL,
    -- When this replica last changed (for measuring how far behind it runs).
    replicated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE orders (
    id         UUID        PRIMARY KEY,
    user_id    UUID        NOT NULL,
    status     TEXT        NOT NULL
        CHECK (status IN ('created', 'cancelled', 'awaiting:payment', 'complete')),
    expires_at TIMESTAMPTZ NOT NULL,
    version    BIGINT      NOT NULL DEFAULT 0,
    -- What was bought, as it was when the order was placed: the order keeps its price
    -- even if the ticket is edited after the order is cancelled.
    ticket_id      UUID    NOT NULL REFERENCES tickets (id),
    ticket_title   TEXT    NOT NULL,
    ticket_price_cents BIGINT NOT NULL,
    ticket_version BIGINT  NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- A ticket is reserved while an order for it is created, awaiting payment or
-- complete. This index is what makes reservation race-free: of concurrent orders for
-- one ticket, exactly one can be inserted.
CREATE UNIQUE INDEX orders_one_active_per_ticket ON orders (ticket_id)
    WHERE status IN ('created', 'awaiting:payment', 'complete');

CREATE INDEX orders_by_user_newest ON orders (user_id, created_at DESC, id DESC);
