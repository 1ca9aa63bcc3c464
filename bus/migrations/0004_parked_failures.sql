-- The column counts the failed attempts before an event was parked (1 for one that
-- could not be read), not its deliveries: an event that only waited was redelivered
-- many times without failing once.
ALTER TABLE parked_events RENAME COLUMN deliveries TO failures;
