-- When the hub last acknowledged a node's changes (milliseconds since the
-- Unix epoch; NULL: never), written in the transaction that records the
-- acknowledged sequence. `mirror status` showed last sync "never" after a
-- hub restart (or a driver closed for idleness) when it lived in memory only.
-- Indexes written before this migration start at NULL: the time is unknown.

ALTER TABLE mirror_meta ADD COLUMN synced_at INTEGER;
