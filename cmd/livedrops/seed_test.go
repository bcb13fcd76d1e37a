package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livedrops/livedrops/store/storetest"
)

// TestSeedCommand runs `livedrops seed` against DATABASE_URL and checks what it printed, the tokens it
// wrote (each one valid for its user), and that the API serves the seed.
func TestSeedCommand(t *testing.T) {
	dbURL := storetest.NewMigratedDatabase(t)
	secret := strings.Repeat("k", 32)
	tokensFile := filepath.Join(t.TempDir(), "tokens.txt")
	var stdout bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, []string{"seed", "-users", "30", "-creators", "2", "-products", "5", "-drops", "4",
		"-followers", "25", "-tokens-file", tokensFile}, env(map[string]string{
		"DATABASE_URL": dbURL, "LIVEDROPS_JWT_SECRET": secret, "LIVEDROPS_DATA_DIR": t.TempDir(),
	}), &stdout, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		CelebrityID int64 `json:"celebrity_id"`
		Followers   struct{ First, Last int64 }
		Drops       struct{ First, Last int64 }
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout %q: %v", stdout.String(), err)
	}
	if res.CelebrityID == 0 || res.Followers.Last-res.Followers.First+1 != 25 {
		t.Fatalf("got %+v, want a celebrity and 25 followers", res)
	}

	cfg := testConfig(t, "api", dbURL)
	tokens, err := newTokens(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, tok, ok := strings.Cut(sc.Text(), " ")
		want := res.Followers.First + int64(lines)
		if got, err := tokens.Verify(tok); !ok || err != nil || id != strconv.FormatInt(want, 10) || got != want {
			t.Fatalf("line %d %q: verifies as %d, %v; want user %d", lines, sc.Text(), got, err, want)
		}
		lines++
	}
	if lines != 25 {
		t.Fatalf("got %d token lines, want 25", lines)
	}

	// The api role serves the seed.
	app := startApp(t, cfg)
	base := "http://" + app.Addr()
	resp, body := get(t, base+"/creators/"+strconv.FormatInt(res.CelebrityID, 10))
	var c struct {
		FollowerCount int `json:"follower_count"`
	}
	if err := json.Unmarshal(body, &c); err != nil || resp.StatusCode != http.StatusOK || c.FollowerCount != 25 {
		t.Errorf("GET creator: got %d %s, want 25 followers", resp.StatusCode, body)
	}
	resp, body = get(t, base+"/drops/"+strconv.FormatInt(res.Drops.First, 10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"live"`) {
		t.Errorf("GET drop: got %d %s, want a live drop", resp.StatusCode, body)
	}
	_, body = get(t, base+"/metrics")
	if !strings.Contains(string(body), `livedrops_cache_requests_total{cache="creator",result="miss"} 1`) {
		t.Errorf("/metrics lacks the cache's counters")
	}
}

func TestSeedFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-users", "-1"}, "must not be negative"},
		{[]string{"-creators", "0", "-followers", "3"}, "need -creators"},
		{[]string{"-products", "0", "-drops", "3"}, "needs -products"},
		{[]string{"-token-ttl", "0s"}, "-token-ttl"},
	}
	for _, tc := range tests {
		_, err := parseConfig("seed", tc.args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("seed %v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
