-- The scheduler is woken by the committing process itself (common::db::Signal), not
-- by NOTIFY, which serialises commits cluster-wide (docs/benchmarks.md).
DROP TRIGGER schedules_notify ON schedules;
DROP FUNCTION schedules_notify();
