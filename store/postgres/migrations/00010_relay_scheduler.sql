-- What the outbox relay and the drop scheduler need beyond 00004 and 00002.

-- +goose Up

-- The relay records the JetStream sequence of each published row (outbox.stream_seq). After NATS lost
-- acknowledged messages it finds the rows published after the stream's last sequence with this index,
-- and hubs resume clients by these sequences. Rows the relay coalesced (a stock.changed superseded by a
-- newer one before it was sent) have published_at set and stream_seq NULL: they were never sent.
CREATE INDEX outbox_stream_seq_idx ON outbox (stream_seq) WHERE stream_seq IS NOT NULL;

-- The scheduler arms its timers from the drops table and re-reads it when told that a drop was created
-- or moved in time, so a drop starting in a second is not missed until the next periodic scan.
-- +goose StatementBegin
CREATE FUNCTION drops_notify_scheduler() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('livedrops_drops', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER drops_notify_scheduler
    AFTER INSERT OR UPDATE OF start_time, end_time ON drops
    FOR EACH STATEMENT EXECUTE FUNCTION drops_notify_scheduler();

-- +goose Down

DROP TRIGGER drops_notify_scheduler ON drops;
DROP FUNCTION drops_notify_scheduler();
DROP INDEX outbox_stream_seq_idx;
