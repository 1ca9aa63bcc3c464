-- The relay is woken by the committing process itself (common::db::Signal), not by
-- NOTIFY: PostgreSQL serialises the commits of notifying transactions cluster-wide,
-- disk flush included, which capped every service's write rate (docs/benchmarks.md).
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
