-- When an order last changed (its status): when it was cancelled or completed.
ALTER TABLE orders ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp();
