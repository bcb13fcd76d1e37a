package main

// A command cannot be imported, so this test sits in package main. It runs the bench small against
// the real binary: every write's event and every drop's start must reach the stream exactly once.

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/loadtest/livedropstest"
)

func TestBenchSmall(t *testing.T) {
	dir := t.TempDir()
	bin, err := livedropstest.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := io.Writer(io.Discard)
	if testing.Verbose() {
		out = os.Stdout
	}
	res, err := run(ctx, options{bin: bin, rate: 200, producers: 16, duration: 4 * time.Second, drops: 10,
		lead: time.Second, spread: time.Second, syncs: []string{"always"}, drain: 30 * time.Second, buyers: 500}, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	for _, want := range []string{" lost=0 ", " duplicates=0 ", "RESULT relay_p50_ms="} {
		if !strings.Contains(res+" ", want) {
			t.Errorf("%s: want %q", res, want)
		}
	}
}
