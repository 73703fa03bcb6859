-- The identity of the replica the index describes (node: its workspace's,
-- also in WORKSPACE/.ganglion/replica; hub: the node's, as it last
-- connected). A different one means the ancestor is gone: the hub offers
-- its whole mirror to the node as changes based on nothing, so every
-- difference becomes a conflict and nothing is deleted.

ALTER TABLE mirror_meta ADD COLUMN replica TEXT;
