package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/livedrops/livedrops/fanout"
)

// What the clients logged (followers/main.go describes the lines).
type clientEvent struct {
	recv, ts      int64 // Unix ms
	user          int64
	id, typ       string
	creator, drop int64
}

type clientHello struct {
	at        int64
	user      int64
	recovered string // "1", "0", "-"
}

type clientDrop struct {
	at     int64
	user   int64
	reason string
}

type clientLogs struct {
	events []clientEvent
	hellos []clientHello
	drops  []clientDrop
}

func readClientLogs(t *testing.T, c *clients) clientLogs {
	t.Helper()
	var l clientLogs
	for _, p := range c.procs {
		f, err := os.Open(p.logPath)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<16), 1<<16)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 {
				continue
			}
			at, _ := strconv.ParseInt(fs[1], 10, 64)
			user, _ := strconv.ParseInt(fs[2], 10, 64)
			switch {
			case fs[0] == "E" && len(fs) == 8:
				e := clientEvent{recv: at, user: user, id: fs[3], typ: fs[4]}
				e.creator, _ = strconv.ParseInt(fs[5], 10, 64)
				e.drop, _ = strconv.ParseInt(fs[6], 10, 64)
				e.ts, _ = strconv.ParseInt(fs[7], 10, 64)
				l.events = append(l.events, e)
			case fs[0] == "H" && len(fs) == 5:
				l.hellos = append(l.hellos, clientHello{at: at, user: user, recovered: fs[4]})
			case fs[0] == "D" && len(fs) >= 4:
				l.drops = append(l.drops, clientDrop{at: at, user: user, reason: strings.Join(fs[3:], " ")})
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// outboxEvent is an event the database says happened.
type outboxEvent struct {
	id, subject, typ string
	parked           bool
	published        bool
}

// expectedEvents reads the events on creator and user subjects written after the outbox row afterRow.
func expectedEvents(t *testing.T, s *stack, afterRow int64) []outboxEvent {
	t.Helper()
	rows, err := s.db.Query(context.Background(), `SELECT event_id, subject, type, parked_at IS NOT NULL, stream_seq IS NOT NULL
		FROM outbox WHERE id > $1 AND (subject LIKE 'ld.creator.%' OR subject LIKE 'ld.user.%') ORDER BY id`, afterRow)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxEvent
	for rows.Next() {
		var e outboxEvent
		if err := rows.Scan(&e.id, &e.subject, &e.typ, &e.parked, &e.published); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// delivery is how the clients' logs compare with the database.
type delivery struct {
	expected, delivered               int // (user, event) pairs
	missing, duplicates, unexpected   int
	parked, unpublished               int
	notRecovered, resumes, outOfOrder int
	problems                          []string // one line per problem, to report what is new in a phase
}

func (d *delivery) example(format string, args ...any) {
	d.problems = append(d.problems, fmt.Sprintf(format, args...))
}

func (d delivery) String() string {
	return fmt.Sprintf("expected %d deliveries, delivered %d: missing %d, twice %d, unexpected %d; parked %d, unpublished %d; "+
		"resumes %d (not recovered %d); lifecycle out of order %d", d.expected, d.delivered, d.missing, d.duplicates,
		d.unexpected, d.parked, d.unpublished, d.resumes, d.notRecovered, d.outOfOrder)
}

// lifecycleRank orders a drop's lifecycle events as a follower must see them.
var lifecycleRank = map[string]int{
	string(fanout.DropScheduled): 1, string(fanout.DropStarted): 2, string(fanout.StockLow): 3,
	string(fanout.DropSoldOut): 4, string(fanout.DropEnded): 5,
}

// checkDelivery compares: every expected event of a follower's subjects (the creators it follows, its
// own user subject) reached it exactly once, nothing else did (events up to maxBefore, written before
// the sockets were ready, are not counted), every resume was recovered, and each drop's lifecycle came
// in order.
func checkDelivery(w *world, exp []outboxEvent, logs clientLogs, maxBefore int64) delivery {
	var d delivery
	bySubject := map[string][]string{}
	for _, e := range exp {
		if e.parked {
			d.parked++
		}
		if !e.published {
			d.unpublished++
		}
		bySubject[e.subject] = append(bySubject[e.subject], e.id)
	}
	got := map[int64]map[string]int{}
	for _, e := range logs.events {
		if got[e.user] == nil {
			got[e.user] = map[string]int{}
		}
		got[e.user][e.id]++
	}
	for _, u := range w.followerIDs() {
		want := map[string]bool{}
		subjects := []string{fanout.UserSubject(u)}
		for _, c := range w.follows(u) {
			subjects = append(subjects, fanout.CreatorSubject(c))
		}
		for _, s := range subjects {
			for _, id := range bySubject[s] {
				want[id] = true
			}
		}
		d.expected += len(want)
		for id := range want {
			switch n := got[u][id]; {
			case n == 0:
				d.missing++
				d.example("user %d missed event %s", u, id)
			case n > 1:
				d.duplicates++
				d.example("user %d got event %s %d times", u, id, n)
			}
			if got[u][id] > 0 {
				d.delivered++
			}
		}
		for id, n := range got[u] {
			num, _ := strconv.ParseInt(id, 10, 64)
			if !want[id] && num > maxBefore {
				d.unexpected += n
				d.example("user %d got event %s, not one of its subjects'", u, id)
			}
		}
	}
	for _, h := range logs.hellos {
		switch h.recovered {
		case "1":
			d.resumes++
		case "0":
			d.resumes++
			d.notRecovered++
			d.example("user %d resumed with recovered:false", h.user)
		}
	}
	// Lifecycle order per follower and drop, in the order the follower received them.
	type key struct{ user, drop int64 }
	last := map[key]int{}
	for _, e := range logs.events {
		r, ok := lifecycleRank[e.typ]
		if !ok {
			continue
		}
		k := key{e.user, e.drop}
		if r < last[k] {
			d.outOfOrder++
			d.example("user %d got %s of drop %d after a later lifecycle event", e.user, e.typ, e.drop)
		}
		last[k] = max(last[k], r)
	}
	return d
}

// latencies returns the delivery latencies (ms) of the events whose ts lies in [from, to), leaving
// out the types in skip.
func latencies(logs clientLogs, from, to int64, skip ...string) []float64 {
	var out []float64
	for _, e := range logs.events {
		if e.ts >= from && e.ts < to && !slices.Contains(skip, e.typ) {
			out = append(out, float64(e.recv-e.ts))
		}
	}
	slices.Sort(out)
	return out
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
