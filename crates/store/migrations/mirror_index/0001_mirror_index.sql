-- The mirror index: one row per path per mirror (a node's workspace on the
-- node, a node's mirror on the hub). Tombstones (deleted = 1) keep a deleted
-- path's sequence number until the peer acknowledges it.

CREATE TABLE mirror_meta (
    mirror_id TEXT PRIMARY KEY NOT NULL,
    -- the last sequence number this index assigned
    seq INTEGER NOT NULL DEFAULT 0,
    -- node: the last seq the hub acknowledged; hub: the node seq durably applied
    peer_seq INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE mirror_entries (
    mirror_id TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    symlink_target TEXT,
    hash TEXT,
    seq INTEGER NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('node', 'hub')),
    origin_seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mirror_id, path)
) WITHOUT ROWID;

CREATE INDEX mirror_entries_by_seq ON mirror_entries (mirror_id, seq);
CREATE INDEX mirror_entries_by_hash ON mirror_entries (mirror_id, hash);
