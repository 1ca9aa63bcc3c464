-- The W3C traceparent of the span that appended the event (while traces are on): the
-- relay publishes the event as that span's child, so one trace follows the event from
-- the request or handler that caused it to every consumer.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
