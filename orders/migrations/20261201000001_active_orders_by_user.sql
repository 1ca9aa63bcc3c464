-- A user's unpaid orders, counted on every new order against MAX_ACTIVE_ORDERS_PER_USER.
CREATE INDEX orders_unpaid_by_user ON orders (user_id) WHERE status IN ('created', 'awaiting:payment');
