-- Hub-owned (immutable) paths of each node's mirror: gitignore-style globs.
CREATE TABLE immutable_paths (
    node_id     TEXT NOT NULL REFERENCES nodes(id),
    pattern     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (node_id, pattern)
);
