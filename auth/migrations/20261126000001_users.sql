CREATE TABLE users (
    id            UUID        PRIMARY KEY,
    -- Stored trimmed and lower-cased; the index makes that the rule even so.
    email         TEXT        NOT NULL,
    password_hash TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Two concurrent sign-ups with one email: the second insert fails on this index and
-- is answered `Email in use`.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
