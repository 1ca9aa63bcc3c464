-- A refund is first recorded as due (under the order's lock), then made at Stripe
-- with no lock or transaction held, then recorded as done. `refund_due_at` marks the
-- first step; a charge whose refund is due is no longer the order's kept charge.
ALTER TABLE charges ADD COLUMN refund_due_at TIMESTAMPTZ;
UPDATE charges SET refund_due_at = updated_at WHERE stripe_refund_id IS NOT NULL;

-- At most one kept (completed, no refund due) charge per order.
DROP INDEX charges_one_kept_per_order;
CREATE UNIQUE INDEX charges_one_kept_per_order ON charges (order_id)
    WHERE status = 'completed' AND refund_due_at IS NULL;

-- Refunds due but not made yet, for the reconciler.
CREATE INDEX charges_refund_pending ON charges (refund_due_at)
    WHERE refund_due_at IS NOT NULL AND stripe_refund_id IS NULL;

-- The charges of one order (every decision about an order's money looks them up).
CREATE INDEX charges_by_order ON charges (order_id);
