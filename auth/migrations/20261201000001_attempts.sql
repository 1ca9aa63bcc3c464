-- Attempts counted where every replica of auth sees them: sign-in failures per
-- account and per client address, sign-ups per client address. Keys:
--   signin:account:<sha-256 of the email, hex>
--   signin:address:<client address>
--   signup:address:<client address>
CREATE TABLE attempts (
    key           TEXT        PRIMARY KEY,
    -- Failures since the last success (sign-in), or sign-ups in the current window.
    count         INTEGER     NOT NULL,
    -- The last failure (sign-in), or the start of the window (sign-up).
    last_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- No attempt with this key is heard before then (429 with Retry-After).
    blocked_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);

-- Pruning: rows whose last attempt is past every window and whose block is over.
CREATE INDEX attempts_last_at ON attempts (last_at);
