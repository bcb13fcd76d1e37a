// Command interest measures the choice a hub makes for the creators its users follow: one NATS
// subscription per followed creator (what the hub does, reference-counted), or one wildcard
// subscription on every creator's subject with local filtering.
//
// For each number of creators and each share of them that have a local follower, it runs both modes
// against an in-process NATS server (the embedded one of the dev stack, same library): it subscribes
// (per creator: one SUB each, then a flush; wildcard: one SUB), then publishes events spread evenly over
// every creator and counts what the hub side receives and keeps. It reports the time to set the
// subscriptions up and the CPU of the whole process per published event, which includes the server's
// routing and the client's receipt (the hub's filter is a map lookup in the wildcard mode).
//
//	go run ./loadtest/interest
//
// prints one line per case and a final RESULT line. It imports no LiveDrops package.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func main() {
	creatorsFlag := flag.String("creators", "1000,10000,50000", "numbers of creators (comma-separated)")
	sharesFlag := flag.String("shares", "0.1,0.5,0.9,1", "shares of the creators with a local follower")
	events := flag.Int("events", 200000, "events published per case")
	flag.Parse()
	if err := run(parseInts(*creatorsFlag), parseFloats(*sharesFlag), *events); err != nil {
		fmt.Fprintln(os.Stderr, "interest:", err)
		os.Exit(1)
	}
}

func run(creators []int, shares []float64, events int) error {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats not ready")
	}
	defer ns.Shutdown()

	var summary []string
	for _, c := range creators {
		for _, share := range shares {
			per, err := measure(ns.ClientURL(), c, share, events, false)
			if err != nil {
				return err
			}
			wild, err := measure(ns.ClientURL(), c, share, events, true)
			if err != nil {
				return err
			}
			fmt.Printf("case creators=%d share=%.2f per_creator: setup_ms=%.1f cpu_us_per_event=%.2f kept=%d | wildcard: setup_ms=%.1f cpu_us_per_event=%.2f kept=%d received=%d\n",
				c, share, per.setup.Seconds()*1000, per.cpuPerEvent, per.kept,
				wild.setup.Seconds()*1000, wild.cpuPerEvent, wild.kept, wild.received)
			summary = append(summary, fmt.Sprintf("c%d_s%02.0f=%.2f", c, share*100, wild.cpuPerEvent/per.cpuPerEvent))
		}
	}
	fmt.Println("RESULT wildcard_over_per_creator_cpu " + strings.Join(summary, " "))
	return nil
}

type result struct {
	setup          time.Duration
	cpuPerEvent    float64
	kept, received int64
}

// measure runs one case: the hub side follows the first share×creators creators.
func measure(url string, creators int, share float64, events int, wildcard bool) (result, error) {
	hubConn, err := nats.Connect(url, nats.Name("hub"))
	if err != nil {
		return result{}, err
	}
	defer hubConn.Close()
	pubConn, err := nats.Connect(url, nats.Name("relay"))
	if err != nil {
		return result{}, err
	}
	defer pubConn.Close()

	followed := int(float64(creators) * share)
	local := make(map[string]bool, followed) // the hub's registry: subjects with a local follower
	for i := range followed {
		local["ld.creator."+strconv.Itoa(i)] = true
	}
	var kept, received atomic.Int64
	var done = make(chan struct{})
	expectKept := int64(0)
	for i := range events {
		if i%creators < followed {
			expectKept++
		}
	}
	keep := func(m *nats.Msg) {
		received.Add(1)
		if !wildcard || local[m.Subject] {
			if kept.Add(1) == expectKept {
				close(done)
			}
		}
	}

	start := time.Now()
	if wildcard {
		if _, err := hubConn.Subscribe("ld.creator.*", keep); err != nil {
			return result{}, err
		}
	} else {
		for i := range followed {
			if _, err := hubConn.Subscribe("ld.creator."+strconv.Itoa(i), keep); err != nil {
				return result{}, err
			}
		}
	}
	if err := hubConn.Flush(); err != nil {
		return result{}, err
	}
	setup := time.Since(start)

	cpu0 := cpuTime()
	payload := []byte(`{"id":"1","type":"drop.started","ts":"2026-11-25T12:00:00.000Z","creator_id":1,"drop_id":1,"data":{}}`)
	for i := range events {
		if err := pubConn.Publish("ld.creator."+strconv.Itoa(i%creators), payload); err != nil {
			return result{}, err
		}
	}
	if err := pubConn.Flush(); err != nil {
		return result{}, err
	}
	if expectKept > 0 {
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			return result{}, fmt.Errorf("kept %d of %d events", kept.Load(), expectKept)
		}
	}
	if err := hubConn.Flush(); err != nil { // everything sent to the hub side has been handed over
		return result{}, err
	}
	cpu := cpuTime() - cpu0
	return result{setup: setup, cpuPerEvent: float64(cpu.Microseconds()) / float64(events),
		kept: kept.Load(), received: received.Load()}, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "interest: bad number %q\n", f)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}

func parseFloats(s string) []float64 {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || x < 0 || x > 1 {
			fmt.Fprintf(os.Stderr, "interest: bad share %q\n", f)
			os.Exit(2)
		}
		out = append(out, x)
	}
	return out
}
