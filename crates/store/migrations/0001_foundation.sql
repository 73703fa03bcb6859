-- Foundation: nodes, invites, node credentials, node status, admin tokens.
-- Timestamps are milliseconds since the Unix epoch (UTC). Secrets are stored
-- only as 32-byte BLAKE3 hashes.

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    policy          TEXT NOT NULL,           -- JSON of ganglion_core::Policy
    capabilities    TEXT,                    -- JSON of ganglion_core::Capabilities, from the last hello
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);

CREATE TABLE invites (
    id              TEXT PRIMARY KEY,
    secret_hash     BLOB NOT NULL UNIQUE,
    name_scope      TEXT,                    -- only this node name may redeem it
    policy          TEXT,                    -- JSON policy given to the node it creates
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER,
    used_by         TEXT REFERENCES nodes(id),
    revoked_at      INTEGER
);

CREATE TABLE node_credentials (
    hash            BLOB PRIMARY KEY,
    node_id         TEXT NOT NULL REFERENCES nodes(id),
    created_at      INTEGER NOT NULL
);
CREATE INDEX node_credentials_node_id ON node_credentials(node_id);

CREATE TABLE node_status (
    node_id         TEXT PRIMARY KEY REFERENCES nodes(id),
    status          TEXT NOT NULL,           -- online | offline
    last_heartbeat  INTEGER,
    peer_addr       TEXT,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE admin_tokens (
    hash            BLOB PRIMARY KEY,
    created_at      INTEGER NOT NULL
);
