-- Replica of the orders service's orders, fed by order.created / order.cancelled in
-- version order. Every decision about a charge locks its order's row here, which
-- serialises paying, settling and cancelling one order.
CREATE TABLE orders (
    id          UUID   PRIMARY KEY,
    user_id     UUID   NOT NULL,
    status      TEXT   NOT NULL
        CHECK (status IN ('created', 'cancelled', 'awaiting:payment', 'complete')),
    price_cents BIGINT NOT NULL,
    version     BIGINT NOT NULL
);

-- Every attempt to pay. The id is derived from (order, card token), so a retried
-- request finds its own earlier attempt, and it names the attempt's Idempotency-Key
-- at Stripe: a retry never charges twice.
CREATE TABLE charges (
    id               UUID        PRIMARY KEY,
    order_id         UUID        NOT NULL REFERENCES orders (id),
    status           TEXT        NOT NULL CHECK (status IN ('created', 'failed', 'completed')),
    amount_cents     BIGINT      NOT NULL CHECK (amount_cents > 0),
    -- The card token, kept to resume an attempt interrupted between Stripe and here.
    source           TEXT        NOT NULL,
    stripe_id        TEXT,
    stripe_refund_id TEXT,
    failure_message  TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- At most one kept (completed, unrefunded) charge per order.
CREATE UNIQUE INDEX charges_one_kept_per_order ON charges (order_id)
    WHERE status = 'completed' AND stripe_refund_id IS NULL;

-- Attempts whose outcome is not recorded yet, for the reconciler.
CREATE INDEX charges_unsettled ON charges (updated_at) WHERE status = 'created';
