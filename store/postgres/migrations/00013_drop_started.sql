-- drop.started is written by the database, in the statement that makes a drop leave 'scheduled'.
--
-- Two statements do that. The scheduler's (UPDATE drops SET status = 'live' at start_time), and the
-- first order of a drop whose start_time has passed while no scheduler ran yet (orders take stock from a
-- drop that is 'scheduled' once now() >= start_time, so that buyers are served on time even when the
-- scheduler is late or every worker is down). Before this migration the scheduler alone wrote
-- drop.started, so a drop that such orders sold out (status 'sold_out') never got one, and a drop they
-- took stock from got its drop.started after its order.confirmed, stock.changed and stock.low.
--
-- The trigger fires on the one UPDATE that moves the drop out of 'scheduled', whichever it is: a drop
-- leaves 'scheduled' once, under its row lock, so its drop.started is written exactly once, however many
-- schedulers and buyers race. An order's UPDATE of the drop runs before the order inserts its own
-- events (order and scheduler transactions take the drop's row lock before they write to the outbox:
-- 00004), so drop.started gets the smaller outbox id and the relay publishes it first, before that
-- drop's stock.changed, stock.low and drop.soldout. Such an order also makes the drop 'live' (when it
-- does not sell it out): it has started.
--
-- The event is the one the Go code used to build: envelope {type, ts = start_time, creator_id, drop_id,
-- data}, data the drop as API.md shows it (store.Drop's JSON), live, with its stock at the start. Times
-- are UTC with milliseconds, as fanout.TimeFormat; the payload is jsonb, like every outbox payload, so
-- key order does not matter. store/postgres/scheduler_test.go compares it with store.Drop's JSON.

-- +goose Up

-- +goose StatementBegin
CREATE FUNCTION drops_write_started_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    product_title text;
    product_price bigint;
BEGIN
    IF NEW.status = 'scheduled' THEN
        NEW.status := 'live';
    END IF;
    SELECT title, price_cents INTO STRICT product_title, product_price
    FROM products WHERE product_id = NEW.product_id;
    INSERT INTO outbox (subject, type, payload) VALUES (
        'ld.creator.' || NEW.creator_id,
        'drop.started',
        jsonb_build_object(
            'type', 'drop.started',
            'ts', to_char(NEW.start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'creator_id', NEW.creator_id,
            'drop_id', NEW.drop_id,
            'data', jsonb_build_object(
                'drop_id', NEW.drop_id,
                'creator_id', NEW.creator_id,
                'product', jsonb_build_object('product_id', NEW.product_id, 'title', product_title,
                    'price_cents', product_price),
                'start_time', to_char(NEW.start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'end_time', to_char(NEW.end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'initial_stock', NEW.initial_stock,
                'stock_count', OLD.stock_count,
                'max_per_user', NEW.max_per_user,
                'status', 'live')));
    PERFORM pg_notify('livedrops_outbox', '');
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- The WHEN clause keeps the trigger off the hot path: an order on a live drop does not call it.
CREATE TRIGGER drops_write_started_event
    BEFORE UPDATE OF status, stock_count ON drops
    FOR EACH ROW
    WHEN (OLD.status = 'scheduled' AND (NEW.status <> 'scheduled' OR NEW.stock_count < OLD.stock_count))
    EXECUTE FUNCTION drops_write_started_event();

-- +goose Down

DROP TRIGGER drops_write_started_event ON drops;
DROP FUNCTION drops_write_started_event();
