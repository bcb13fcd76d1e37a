package api_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestWireFormats pins the JSON of the main answers (testdata/*.golden; go test -run TestWireFormats
// -update rewrites them).
func TestWireFormats(t *testing.T) {
	e := newEnv(t)
	// Fixed ids and times, straight in the database.
	for _, q := range []string{
		`INSERT INTO users (user_id, name, email) VALUES (7, 'DJ', 'dj@example.com'), (8, 'Fan', 'fan@example.com')`,
		`INSERT INTO creators (creator_id, profile_name) VALUES (7, 'DJ Drop')`,
		`INSERT INTO follows (creator_id, follower_id, followed_at) VALUES (7, 8, '2026-11-25T10:00:00.5Z')`,
		`INSERT INTO products (product_id, creator_id, title, description, price_cents) VALUES (3, 7, 'Hoodie', 'Warm', 4900)`,
		`INSERT INTO drops (drop_id, creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user, status)
		 VALUES (42, 7, 3, '2099-11-25T11:00:00.123Z', '2099-11-25T12:00:00Z', 100, 100, 2, 'scheduled')`,
	} {
		if _, err := e.pool.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, method, path string
		body               string
	}{
		{"user", "GET", "/users/8", ""},
		{"creator", "GET", "/creators/7", ""},
		{"followers", "GET", "/creators/7/followers", ""},
		{"following", "GET", "/users/8/following", ""},
		{"product", "GET", "/products/3", ""},
		{"products", "GET", "/products?per_page=1", ""},
		{"drop", "GET", "/drops/42", ""},
		{"problem_invalid", "POST", "/users", `{"name":"x","email":"nope"}`},
		{"problem_unknown_field", "POST", "/users", `{"name":"x","email":"x@example.com","admin":true}`},
		{"problem_not_found", "GET", "/drops/43", ""},
		{"problem_unauthorized", "POST", "/creators", `{"profile_name":"x"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.raw(tc.method, tc.path, "", []byte(tc.body)).body
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s %s:\ngot  %s\nwant %s", tc.method, tc.path, got, want)
			}
		})
	}
}
