package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store"
)

// TestBadBodies sends malformed bodies to every write route: each is a 4xx problem with a detail that
// says what is wrong, and nothing is written.
func TestBadBodies(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {})
	_, token := e.newCreator("maker")
	routes := []string{"/users", "/creators", "/products", "/drops"}
	tests := []struct {
		name        string
		body        string
		contentType string
		status      int
		code        string
		detail      string // a part of the detail
	}{
		{"empty", "", "application/json", 400, "invalid_argument", "empty"},
		{"white space", "  \n ", "application/json", 400, "invalid_argument", "empty"},
		{"malformed", `{"name":`, "application/json", 400, "invalid_argument", "ends too early"},
		{"syntax error", `{"name" "x"}`, "application/json", 400, "invalid_argument", "malformed JSON at byte"},
		{"trailing data", `{} {}`, "application/json", 400, "invalid_argument", "after the JSON object"},
		{"trailing garbage", `{"profile_name":"p"}x`, "application/json", 400, "invalid_argument", ""},
		{"array", `[1,2]`, "application/json", 400, "invalid_argument", "must be a JSON object"},
		{"string", `"hello"`, "application/json", 400, "invalid_argument", "must be a JSON object"},
		{"unknown field", `{"nickname":"x"}`, "application/json", 400, "invalid_argument", `unknown field "nickname"`},
		{"invalid UTF-8", "{\"name\":\"\xff\xfe\"}", "application/json", 400, "invalid_argument", "UTF-8"},
		{"not JSON content type", `{"name":"a"}`, "text/plain", 415, "unsupported_media_type", "application/json"},
		{"form", `name=a`, "application/x-www-form-urlencoded", 415, "unsupported_media_type", ""},
		{"oversize", `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, "application/json", 413, "payload_too_large", "limit"},
		{"null", `null`, "application/json", 400, "invalid_argument", "required"},
	}
	for _, route := range routes {
		for _, tc := range tests {
			t.Run(route+" "+tc.name, func(t *testing.T) {
				resp := e.raw("POST", route, token, []byte(tc.body), "Content-Type", tc.contentType)
				resp.expect(t, tc.status, tc.code)
				if p := resp.problem(t); !strings.Contains(p.Detail, tc.detail) {
					t.Errorf("got detail %q, want it to mention %q", p.Detail, tc.detail)
				}
			})
		}
	}
	wrongTypes := map[string]string{
		"/users":    `{"name":7}`,
		"/creators": `{"profile_name":true}`,
		"/products": `{"title":"t","price_cents":"100"}`,
		"/drops":    `{"product_id":"7"}`,
	}
	for route, body := range wrongTypes {
		resp := e.raw("POST", route, token, []byte(body))
		resp.expect(t, 400, "invalid_argument")
		if p := resp.problem(t); !strings.Contains(p.Detail, "want") {
			t.Errorf("%s %s: got detail %q, want it to say what type is wanted", route, body, p.Detail)
		}
	}
	// A chunked body over the limit (no Content-Length) is caught while reading.
	req, err := http.NewRequest("POST", e.srv.URL+"/products", &onlyReader{strings.NewReader(`{"title":"` + strings.Repeat("a", 70<<10) + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversize: got %d, want 413", resp.StatusCode)
	}
	for table, want := range map[string]int{"users": 1, "products": 0, "drops": 0} {
		var n int
		if err := e.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != want {
			t.Errorf("got %d rows in %s (%v), want %d", n, table, err, want)
		}
	}
}

// onlyReader hides everything but Read, so the client cannot learn the length and sends chunks.
type onlyReader struct{ r *strings.Reader }

func (o *onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// checkDecoded is what every body decoder promises: an error is answered 4xx as problem+json; a
// success came from a JSON object with only known fields and valid strings.
func checkDecoded(t *testing.T, body []byte, err error) {
	t.Helper()
	if err != nil {
		status, ct := api.ErrorAnswer(err)
		if status < 400 || status > 499 || ct != "application/problem+json" {
			t.Fatalf("body %q: error %v answered %d %s, want a 4xx problem", body, err, status, ct)
		}
		return
	}
	if !utf8.Valid(body) {
		t.Fatalf("body %q is not UTF-8 but was accepted", body)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object but was accepted: %v", body, err)
	}
}

func seedBodies(f *testing.F, bodies ...string) {
	for _, b := range bodies {
		f.Add([]byte(b))
	}
	for _, b := range []string{"", "{}", "null", "[]", `{"a":1}`, "{\"name\":\"\x00\"}", `{} {}`, "\xff"} {
		f.Add([]byte(b))
	}
}

func FuzzCreateUserBody(f *testing.F) {
	seedBodies(f, `{"name":"Ada","email":"ada@example.com"}`, `{"name":"Ada\u0007","email":"a@b"}`, `{"name":1}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := api.ParseCreateUser(body)
		checkDecoded(t, body, err)
		if err == nil {
			if verr := u.Validate(); verr != nil {
				t.Fatalf("body %q accepted but invalid: %v", body, verr)
			}
		}
	})
}

func FuzzCreateCreatorBody(f *testing.F) {
	seedBodies(f, `{"profile_name":"DJ"}`, `{"profile_name":"   "}`, `{"profile_name":["x"]}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		name, err := api.ParseCreateCreator(body)
		checkDecoded(t, body, err)
		if err == nil {
			if verr := store.ValidateProfileName(name); verr != nil {
				t.Fatalf("body %q accepted but invalid: %v", body, verr)
			}
		}
	})
}

func FuzzCreateProductBody(f *testing.F) {
	seedBodies(f, `{"title":"Hoodie","description":"Warm","price_cents":4900}`, `{"title":"x","price_cents":1e3}`,
		`{"title":"x","price_cents":-1}`, `{"title":"x","price_cents":99999999999999999999}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := api.ParseCreateProduct(body)
		checkDecoded(t, body, err)
		if err == nil {
			if verr := p.Validate(); verr != nil {
				t.Fatalf("body %q accepted but invalid: %v", body, verr)
			}
		}
	})
}

func FuzzCreateDropBody(f *testing.F) {
	seedBodies(f, `{"product_id":1,"start_time":"2030-01-01T00:00:00Z","end_time":"2030-01-01T01:00:00.5Z","stock_count":10,"max_per_user":1}`,
		`{"product_id":1,"start_time":"2030-13-01T00:00:00Z","end_time":"x","stock_count":10,"max_per_user":1}`,
		`{"product_id":1.0,"start_time":1,"end_time":null,"stock_count":"10","max_per_user":true}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := api.ParseCreateDrop(body)
		checkDecoded(t, body, err)
		if err == nil && (d.StartTime.IsZero() || d.EndTime.IsZero()) {
			t.Fatalf("body %q accepted without its times", body)
		}
		if err == nil && !bytes.Contains(body, []byte("product_id")) {
			t.Fatalf("body %q accepted without product_id", body)
		}
	})
}
