-- The W3C traceparent of the span that scheduled the entry (while traces are on): its
-- expiry, fired minutes later, continues the order's trace.
ALTER TABLE schedules ADD COLUMN traceparent TEXT;
