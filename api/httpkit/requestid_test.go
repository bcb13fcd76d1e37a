package httpkit_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/livedrops/livedrops/api/httpkit"
)

// saneID is the rule for reusing an inbound request id, written independently
// of the package as an oracle.
var saneID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// serveID sends inbound (absent when nil) through RequestID and returns the
// response header and the id the handler saw in its context.
func serveID(tb testing.TB, inbound *string) (header, fromCtx string) {
	tb.Helper()
	h := httpkit.RequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		fromCtx = httpkit.RequestIDFrom(r.Context())
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if inbound != nil {
		req.Header.Set(httpkit.RequestIDHeader, *inbound)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Header().Get(httpkit.RequestIDHeader), fromCtx
}

func ptr(s string) *string { return &s }

func TestRequestID(t *testing.T) {
	tests := []struct {
		name      string
		inbound   *string
		wantReuse bool
	}{
		{"absent", nil, false},
		{"empty", ptr(""), false},
		{"uuid", ptr("0b5e1d4c-7f0a-4c1e-9d4e-2f6b8a1c3e5f"), true},
		{"all allowed chars", ptr("AZaz09._-"), true},
		{"64 chars", ptr(strings.Repeat("a", 64)), true},
		{"65 chars", ptr(strings.Repeat("a", 65)), false},
		{"space", ptr("abc def"), false},
		{"header injection", ptr("abc\r\nSet-Cookie: x=1"), false},
		{"slash", ptr("a/b"), false},
		{"non-ASCII", ptr("idé"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, fromCtx := serveID(t, tt.inbound)

			if header != fromCtx {
				t.Errorf("context id: got %q, want the header's %q", fromCtx, header)
			}
			if tt.wantReuse {
				if header != *tt.inbound {
					t.Errorf("id: got %q, want the inbound %q", header, *tt.inbound)
				}
				return
			}
			if !saneID.MatchString(header) {
				t.Errorf("generated id %q is not sane", header)
			}
			if tt.inbound != nil && header == *tt.inbound {
				t.Errorf("id: got the inbound %q, want a fresh one", header)
			}
		})
	}
}

func TestRequestIDUnique(t *testing.T) {
	first, _ := serveID(t, nil)
	second, _ := serveID(t, nil)
	if first == second {
		t.Errorf("two generated ids: got %q twice, want them distinct", first)
	}
}

func TestRequestIDFromEmptyContext(t *testing.T) {
	if got := httpkit.RequestIDFrom(t.Context()); got != "" {
		t.Errorf("got %q, want \"\"", got)
	}
}

func FuzzRequestID(f *testing.F) {
	for _, seed := range []string{
		"", "abc", "0b5e1d4c-7f0a-4c1e-9d4e-2f6b8a1c3e5f", strings.Repeat("z", 64), strings.Repeat("z", 65),
		"a b", "a\x00b", "a\nb", "../etc", "idé", "A.b_c-9",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, inbound string) {
		header, fromCtx := serveID(t, &inbound)
		if !saneID.MatchString(header) {
			t.Fatalf("inbound %q: answered id %q is not sane", inbound, header)
		}
		if reused := header == inbound; reused != saneID.MatchString(inbound) {
			t.Fatalf("inbound %q: reused %v, want %v", inbound, reused, !reused)
		}
		if fromCtx != header {
			t.Fatalf("inbound %q: context id %q, want %q", inbound, fromCtx, header)
		}
	})
}
