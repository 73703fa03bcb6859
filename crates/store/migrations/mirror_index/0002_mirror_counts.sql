-- Live files and their bytes per mirror, kept by triggers in the same
-- transaction as the rows, so `mirror status` and a reconnecting node are
-- answered without loading the mirror's entries (a hub restart loads them in
-- the background). Backfilled here for indexes written before this migration.

ALTER TABLE mirror_meta ADD COLUMN files INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mirror_meta ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;

UPDATE mirror_meta SET
    files = (SELECT count(*) FROM mirror_entries e
             WHERE e.mirror_id = mirror_meta.mirror_id AND e.deleted = 0 AND e.kind = 'file'),
    bytes = (SELECT coalesce(sum(e.size), 0) FROM mirror_entries e
             WHERE e.mirror_id = mirror_meta.mirror_id AND e.deleted = 0 AND e.kind = 'file');

CREATE TRIGGER mirror_entries_count_insert AFTER INSERT ON mirror_entries
WHEN NEW.deleted = 0 AND NEW.kind = 'file'
BEGIN
    UPDATE mirror_meta SET files = files + 1, bytes = bytes + NEW.size
    WHERE mirror_id = NEW.mirror_id;
END;

CREATE TRIGGER mirror_entries_count_delete AFTER DELETE ON mirror_entries
WHEN OLD.deleted = 0 AND OLD.kind = 'file'
BEGIN
    UPDATE mirror_meta SET files = files - 1, bytes = bytes - OLD.size
    WHERE mirror_id = OLD.mirror_id;
END;

CREATE TRIGGER mirror_entries_count_update AFTER UPDATE ON mirror_entries
WHEN (OLD.deleted = 0 AND OLD.kind = 'file') OR (NEW.deleted = 0 AND NEW.kind = 'file')
BEGIN
    UPDATE mirror_meta SET files = files - 1, bytes = bytes - OLD.size
    WHERE mirror_id = OLD.mirror_id AND OLD.deleted = 0 AND OLD.kind = 'file';
    UPDATE mirror_meta SET files = files + 1, bytes = bytes + NEW.size
    WHERE mirror_id = NEW.mirror_id AND NEW.deleted = 0 AND NEW.kind = 'file';
END;
