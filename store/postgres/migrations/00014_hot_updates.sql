-- Two updates per order become HOT (heap-only tuple) updates (issue 14): the relay's record that an
-- event was published, and the buyer's running total.
--
-- drop_purchases: a buyer's row is updated at each later purchase of the drop. Its columns are not
-- indexed, but a full page forced each update onto another page, with new entries in both indexes (two
-- updates in three in a flash sale). fillfactor leaves room on the page (pages written before keep
-- what they have).
--
-- outbox: before, marking a row published (published_at, stream_seq) changed indexed columns: the pending
-- index's predicate (published_at) and outbox_stream_seq_idx (stream_seq). Every such UPDATE therefore
-- wrote a new version of the row, payload and all, on any page, plus an entry in each of the table's
-- indexes: in a flash sale, PostgreSQL's largest cost per order after the order itself. Now no index
-- covers a column the relay changes, and the table leaves room on each page, so the update stays on the
-- row's page (heap-only tuple: no index entry, and its WAL record holds only the changed bytes).
--
-- The relay still needs its pending rows without reading the whole table. Each row now records the
-- transaction that wrote it (xid, an index): the relay reads the pending rows among those written by
-- transactions at or after the oldest one that was still running at its previous read (or that wrote a
-- row it has not finished with yet). A row committed late, whatever its id, was written by a
-- transaction that was still running then, so it is found: ids are handed out at insert, not commit,
-- and that never mattered for xids. store/postgres/relay.go (Outbox.Pending) has the argument.
--
-- Re-queueing a row by hand: clear parked_at (and published_at) and set xid = pg_current_xact_id() in
-- the same UPDATE; the relay then publishes it at its next round. Without the xid it is found by the
-- relay's full pass (once a minute, and when it starts leading).
--
-- Requeue (refilling what NATS lost) reads the replay window through outbox_created_at_idx instead of
-- outbox_stream_seq_idx: it runs when the relay starts leading or NATS reconnected, not per event.

-- +goose Up

-- A constant default adds the column without rewriting the table: existing rows get 0 ("before every
-- transaction"), and the pending ones the migration's own transaction, so the relay's reads find them.
ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
UPDATE outbox SET xid = pg_current_xact_id() WHERE published_at IS NULL AND parked_at IS NULL;
ALTER TABLE outbox ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX outbox_xid_idx ON outbox (xid);

DROP INDEX outbox_pending_idx;
DROP INDEX outbox_stream_seq_idx;

-- Room on each page for one more version of each row: a row is inserted once and marked published
-- once (a payload of a few hundred bytes). Pages written before keep what they have.
ALTER TABLE outbox SET (fillfactor = 45);

ALTER TABLE drop_purchases SET (fillfactor = 70);

-- +goose Down

ALTER TABLE drop_purchases RESET (fillfactor);

ALTER TABLE outbox RESET (fillfactor);
CREATE INDEX outbox_stream_seq_idx ON outbox (stream_seq) WHERE stream_seq IS NOT NULL;
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;
DROP INDEX outbox_xid_idx;
ALTER TABLE outbox DROP COLUMN xid;
