-- The journal: every task and each of its state changes.

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    node_id         TEXT NOT NULL REFERENCES nodes(id),
    argv            TEXT NOT NULL,           -- JSON array of strings
    cwd             TEXT,
    timeout_ms      INTEGER,
    status          TEXT NOT NULL,           -- pending | running | succeeded | failed | cancelled
    exit_code       INTEGER,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    stdout          BLOB,                    -- stored output, capped
    stderr          BLOB,
    output_bytes    INTEGER NOT NULL DEFAULT 0,
    output_truncated INTEGER NOT NULL DEFAULT 0,
    history         TEXT NOT NULL,           -- JSON array of {at, status, note}
    lost_at         INTEGER                  -- set when failed because its node was lost
);
CREATE INDEX tasks_node_created ON tasks(node_id, created_at);
CREATE INDEX tasks_status_created ON tasks(status, created_at);
CREATE INDEX tasks_created ON tasks(created_at);
