-- Orders this service has seen cancelled. order.created and order.cancelled travel on
-- different subjects and consumers, so either may be handled first (after an outage,
-- say, when both catch up at once). Remembering cancellations lets a late
-- order.created for an order that is already over be ignored instead of reserving
-- the ticket for good.
CREATE TABLE cancelled_orders (
    order_id     UUID        PRIMARY KEY,
    ticket_id    UUID        NOT NULL,
    cancelled_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
