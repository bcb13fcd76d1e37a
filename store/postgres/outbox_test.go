package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store/postgres"
	"github.com/livedrops/livedrops/store/storetest"
)

func TestInsertEvents(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewMigratedDatabase(t)
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "LISTEN "+postgres.OutboxChannel); err != nil {
		t.Fatal(err)
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ts := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	events := []fanout.Event{
		{ID: "ignored", Type: fanout.DropStarted, TS: ts, CreatorID: 7, DropID: 42, Data: json.RawMessage(`{"status":"live"}`)},
		{Type: fanout.StockChanged, TS: ts, CreatorID: 7, DropID: 42, Data: json.RawMessage(`{"stock_count":9,"sold":1}`)},
		{Type: fanout.OrderConfirmed, TS: ts, CreatorID: 7, DropID: 42, UserID: 5},
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.InsertEvents(ctx, tx, events...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := listener.WaitForNotification(waitCtx); err != nil {
		t.Fatalf("no notification after commit: %v", err)
	}

	rows, err := conn.Query(ctx, "SELECT event_id, subject, type, payload FROM outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id, subject, typ string
		payload          []byte
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.subject, &x.typ, &x.payload)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantSubjects := []string{"ld.creator.7", "ld.drop.42", "ld.user.5"}
	if len(got) != len(events) {
		t.Fatalf("got %d rows, want %d", len(got), len(events))
	}
	prev := int64(0)
	for i, r := range got {
		if r.subject != wantSubjects[i] || r.typ != string(events[i].Type) {
			t.Errorf("row %d: got %s %s, want %s %s", i, r.subject, r.typ, wantSubjects[i], events[i].Type)
		}
		n, err := strconv.ParseInt(r.id, 10, 64)
		if err != nil || n <= prev {
			t.Errorf("row %d: event id %q not increasing after %d", i, r.id, prev)
		}
		prev = n
		var ev fanout.Event
		if err := json.Unmarshal(r.payload, &ev); err != nil {
			t.Fatalf("row %d payload %s: %v", i, r.payload, err)
		}
		if ev.ID != "" || ev.Type != events[i].Type || !ev.TS.Equal(ts) || ev.DropID != 42 {
			t.Errorf("row %d payload: got %+v", i, ev)
		}
	}
}

func TestInsertEventsRefusesInvalidAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, storetest.NewMigratedDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	good := fanout.Event{Type: fanout.DropSoldOut, TS: time.Now(), CreatorID: 1, DropID: 2}
	bad := fanout.Event{Type: fanout.OrderConfirmed, TS: time.Now(), CreatorID: 1, DropID: 2} // no user
	err = postgres.InsertEvents(ctx, conn, good, bad)
	if !errors.Is(err, fanout.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil || n != 0 {
		t.Fatalf("outbox rows after a refused batch: %d, %v; want 0", n, err)
	}
}
