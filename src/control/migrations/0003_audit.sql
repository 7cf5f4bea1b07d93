-- Who changed what: every API call that changes something, with the SecretId that signed it
-- (never the key or the signature), the resources it named, where it came from, how it ended
-- and its RequestId. Kept as long as events (RETAIN_DAYS), pruned by the same beat.
CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    time_ms bigint NOT NULL,
    secret_id text NOT NULL,
    action text NOT NULL,
    resources text[] NOT NULL,
    source text NOT NULL,
    outcome text NOT NULL,
    request_id text NOT NULL,
    replica text NOT NULL
);
CREATE INDEX audit_time ON audit (time_ms);
