package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/livedrops/livedrops/store/storetest"
)

// TestPprofListener: with LIVEDROPS_PPROF_ADDR the profiles are served on that listener only, never on
// the public one; without it nothing listens.
func TestPprofListener(t *testing.T) {
	tests := []struct {
		name string
		addr string
	}{
		{"off", ""},
		{"on", "127.0.0.1:0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "api", storetest.NewMigratedDatabase(t))
			cfg.PprofAddr = tc.addr
			app := startApp(t, cfg)
			resp, _ := get(t, "http://"+app.Addr()+"/debug/pprof/")
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("public listener /debug/pprof/: got %d, want 404", resp.StatusCode)
			}
			if tc.addr == "" {
				if app.pprof != nil {
					t.Fatal("pprof listener started although it is off")
				}
				return
			}
			if app.pprof == nil {
				t.Fatal("no pprof listener")
			}
			base := "http://" + app.pprof.Addr() + "/debug/pprof/"
			resp, body := get(t, base)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "block") {
				t.Fatalf("pprof index: got %d %.200s", resp.StatusCode, body)
			}
			for _, p := range []string{"block?debug=1", "mutex?debug=1", "heap?debug=1", "profile?seconds=1"} {
				resp, body := get(t, base+p)
				if resp.StatusCode != http.StatusOK || len(body) == 0 {
					t.Errorf("%s: got %d with %d bytes", p, resp.StatusCode, len(body))
				}
			}
		})
	}
}
