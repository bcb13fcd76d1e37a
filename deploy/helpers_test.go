package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// rest calls the public API of a deployment at base, failing the test on any unexpected answer.
type rest struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// call sends method path with body as JSON and the bearer token, requires status want and decodes
// the answer into out (when not nil).
func (r rest) call(method, path, token string, body any, want int, out any) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			r.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.ctx, method, r.base+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		r.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			r.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

type account struct {
	UserID int64  `json:"user_id"`
	Token  string `json:"token"`
}

// shop creates a creator with one product and a fan who follows the creator; tag keeps the e-mail
// addresses of one test apart from another's.
func (r rest) shop(tag string) (creator, fan account, product int64) {
	r.t.Helper()
	r.call("POST", "/users", "", map[string]string{"name": "Creator", "email": "creator@" + tag + ".test"}, 201, &creator)
	r.call("POST", "/users", "", map[string]string{"name": "Fan", "email": "fan@" + tag + ".test"}, 201, &fan)
	r.call("POST", "/creators", creator.Token, map[string]string{"profile_name": "Shop"}, 201, nil)
	r.call("POST", fmt.Sprintf("/users/%d/follow/%d", fan.UserID, creator.UserID), fan.Token, nil, 204, nil)
	var p struct {
		ProductID int64 `json:"product_id"`
	}
	r.call("POST", "/products", creator.Token, map[string]any{"title": "Hoodie", "price_cents": 4900}, 201, &p)
	return creator, fan, p.ProductID
}

// drop schedules a drop of the product, 10 units, starting in startIn.
func (r rest) drop(creator account, product int64, startIn time.Duration) int64 {
	r.t.Helper()
	start := time.Now().Add(startIn).UTC()
	var d struct {
		DropID int64 `json:"drop_id"`
	}
	r.call("POST", "/drops", creator.Token, map[string]any{"product_id": product,
		"start_time": start.Format(time.RFC3339Nano), "end_time": start.Add(time.Hour).Format(time.RFC3339Nano),
		"stock_count": 10, "max_per_user": 2}, 201, &d)
	return d.DropID
}
