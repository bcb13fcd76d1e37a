package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v4"
)

const asyncAPIFile = "../docs/asyncapi.yaml"

// loadAsyncAPI reads docs/asyncapi.yaml as a JSON value.
func loadAsyncAPI(t *testing.T) any {
	t.Helper()
	b, err := os.ReadFile(asyncAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", asyncAPIFile, err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestAsyncAPIDocumentIsValid checks docs/asyncapi.yaml against the official AsyncAPI 3.0.0 JSON
// schema (the npm package @asyncapi/specs, pinned in web/package.json), and that every reference in it
// resolves.
func TestAsyncAPIDocumentIsValid(t *testing.T) {
	npmCI(t)
	doc := loadAsyncAPI(t)
	f, err := os.Open("node_modules/@asyncapi/specs/schemas/3.0.0.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	const specURL = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
	if err := c.AddResource(specURL, spec); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(specURL)
	if err != nil {
		t.Fatalf("compile the AsyncAPI 3.0.0 schema: %v", err)
	}
	if err := sch.Validate(doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml is not valid AsyncAPI 3.0.0: %v", err)
	}
	// Every $ref points at something.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, err := pointer(doc, strings.TrimPrefix(ref, "#")); err != nil {
					t.Errorf("%s: $ref %s: %v", at, ref, err)
				}
			}
			for k, x := range v {
				walk(x, at+"/"+k)
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	walk(doc, "")
}

func pointer(doc any, p string) (any, error) {
	v := doc
	for _, part := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q is not an object", part)
		}
		if v, ok = m[strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")]; !ok {
			return nil, fmt.Errorf("no %q", part)
		}
	}
	return v, nil
}

// frameSchemas compiles the payload schema of every message of docs/asyncapi.yaml, by frame type (the
// message's name).
func frameSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	doc := loadAsyncAPI(t)
	const url = "file:///asyncapi.json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	msgs, err := pointer(doc, "/components/messages")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*jsonschema.Schema{}
	for key, m := range msgs.(map[string]any) {
		name := m.(map[string]any)["name"].(string)
		sch, err := c.Compile(url + "#/components/messages/" + key + "/payload")
		if err != nil {
			t.Fatalf("message %s: %v", key, err)
		}
		out[name] = sch
	}
	return out
}

// TestFramesMatchAsyncAPI drives a real socket through every frame it can see (hello, watching,
// error, pong, and the drop, stock, order and follow events), over WebSocket and SSE, and validates
// each frame received against its schema in docs/asyncapi.yaml.
func TestFramesMatchAsyncAPI(t *testing.T) {
	s := liveStack(t)
	schemas := frameSchemas(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	maker, fan := s.newUser(t, "Ada"), s.newUser(t, "Ben")
	s.call(t, "POST", "/creators", maker.Token, map[string]string{"profile_name": "Ada's"}, 201, nil)

	var mu sync.Mutex
	var frames []string
	seen := map[string]int{}
	record := func(raw string) {
		var f struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal([]byte(raw), &f)
		mu.Lock()
		frames = append(frames, raw)
		seen[f.Type]++
		mu.Unlock()
	}
	ws, _, err := websocket.Dial(ctx, strings.Replace(s.base, "http", "ws", 1)+"/ws?access_token="+fan.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	go func() {
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			record(string(b))
		}
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			if ctx.Err() != nil {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%s: not seen; frames so far:\n%s", what, strings.Join(frames, "\n"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	has := func(typ string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return seen[typ] > 0 }
	}
	send := func(v string) {
		t.Helper()
		if err := ws.Write(ctx, websocket.MessageText, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("hello", has("hello"))

	s.call(t, "POST", fmt.Sprintf("/users/%d/follow/%d", fan.ID, maker.ID), fan.Token, nil, 204, nil)
	waitFor("follow.changed", has("follow.changed"))
	var p struct {
		ProductID int64 `json:"product_id"`
	}
	s.call(t, "POST", "/products", maker.Token, map[string]any{"title": "Zine", "price_cents": 500}, 201, &p)
	start := time.Now().Add(1500 * time.Millisecond)
	var d dropJSON
	s.call(t, "POST", "/drops", maker.Token, map[string]any{"product_id": p.ProductID, "start_time": start.UTC().Format(time.RFC3339Nano),
		"end_time": start.Add(6 * time.Second).UTC().Format(time.RFC3339Nano), "stock_count": 10, "max_per_user": 10}, 201, &d)
	waitFor("drop.scheduled", has("drop.scheduled"))
	waitFor("drop.started", has("drop.started"))
	send(fmt.Sprintf(`{"op":"watch","drop_id":%d}`, d.DropID))
	send(`{"op":"watch","drop_id":999999999}`)
	send(`{"op":"ping"}`)
	waitFor("watching", has("watching"))
	waitFor("error", has("error"))
	waitFor("pong", has("pong"))
	s.call(t, "POST", "/orders", fan.Token, map[string]any{"drop_id": d.DropID, "quantity": 9, "idempotency_key": "a1"}, 201, nil)
	waitFor("stock.low", has("stock.low"))
	s.call(t, "POST", "/orders", fan.Token, map[string]any{"drop_id": d.DropID, "quantity": 1, "idempotency_key": "a2"}, 201, nil)
	for _, typ := range []string{"order.confirmed", "stock.changed", "drop.soldout", "drop.ended"} {
		waitFor(typ, has(typ))
	}

	// The same over SSE, resumed from the first event: its hello says recovered, then the replay.
	mu.Lock()
	var first struct {
		ID string `json:"id"`
	}
	for _, f := range frames {
		if json.Unmarshal([]byte(f), &first) == nil && first.ID != "" {
			break
		}
	}
	mu.Unlock()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.base+"/events?access_token="+fan.Token+"&since="+first.ID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sse []string
	sc := bufio.NewScanner(resp.Body)
	deadline := time.AfterFunc(10*time.Second, func() { resp.Body.Close() })
	defer deadline.Stop()
	for sc.Scan() && len(sse) < 6 {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			sse = append(sse, data)
		}
	}
	if len(sse) < 6 {
		t.Fatalf("SSE: %d records, want the hello and at least 5 replayed events: %q", len(sse), sse)
	}

	mu.Lock()
	defer mu.Unlock()
	all := append(append([]string{}, frames...), sse...)
	var types []string
	for typ := range seen {
		types = append(types, typ)
	}
	sort.Strings(types)
	t.Logf("validated %d frames (%d over SSE) of types %v", len(all), len(sse), types)
	for _, raw := range all {
		var v any
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(raw))
		if err != nil {
			t.Errorf("not JSON: %s", raw)
			continue
		}
		typ, _ := v.(map[string]any)["type"].(string)
		sch := schemas[typ]
		if sch == nil {
			t.Errorf("frame of type %q has no message in docs/asyncapi.yaml: %s", typ, raw)
			continue
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("frame does not match its schema %q: %s\n%v", typ, raw, err)
		}
	}
	if !strings.Contains(sse[0], `"recovered":true`) {
		t.Errorf("SSE hello after a resume: %s, want recovered true", sse[0])
	}
}
