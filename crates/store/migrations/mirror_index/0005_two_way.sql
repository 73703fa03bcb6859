-- The two-way mirror. The hub numbers its own changes of a node's mirror
-- (out_seq) and queues them for the node in mirror_outbox until the node
-- reports them applied (out_acked; on the node, the last one it applied).
-- A row is written in the transaction that publishes the change in the
-- hub's mirror, so a change the hub made is never forgotten by the queue.
-- mirror_conflicts lists open conflicts (the hub's list, by conflict path).

ALTER TABLE mirror_meta ADD COLUMN out_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mirror_meta ADD COLUMN out_acked INTEGER NOT NULL DEFAULT 0;

CREATE TABLE mirror_outbox (
    mirror_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('put', 'delete', 'move')),
    path TEXT NOT NULL,
    -- move: the destination
    to_path TEXT,
    -- put: the content
    hash TEXT,
    size INTEGER,
    executable INTEGER,
    base_kind TEXT NOT NULL CHECK (base_kind IN ('absent', 'file', 'dir', 'symlink')),
    base_value TEXT,
    PRIMARY KEY (mirror_id, seq)
) WITHOUT ROWID;

CREATE TABLE mirror_conflicts (
    mirror_id TEXT NOT NULL,
    conflict_path TEXT NOT NULL,
    path TEXT NOT NULL,
    origin TEXT NOT NULL,
    detected_at INTEGER NOT NULL,
    PRIMARY KEY (mirror_id, conflict_path)
) WITHOUT ROWID;
