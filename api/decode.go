package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/store"
)

// readBody reads r's body for decodeJSON. It refuses a Content-Type other than JSON (415) and a body
// over the limit (413).
func readBody(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, &requestError{code: "unsupported_media_type", detail: "send the body as application/json"}
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return nil, &requestError{code: "payload_too_large", detail: fmt.Sprintf("the request body exceeds the limit of %d bytes", mbe.Limit)}
		}
		return nil, badRequest("the request body could not be read")
	}
	return body, nil
}

// decodeJSON reads body as one JSON object into dst (a pointer to a request struct). It refuses, each
// with its own detail: an empty body, invalid UTF-8, malformed JSON, a value of the wrong type, an
// unknown field, and anything after the object.
func decodeJSON(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("the request body is empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return badRequest("the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("unexpected data after the JSON object")
	}
	return nil
}

// jsonError explains a json.Decoder error to the client.
func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var fe *store.FieldError
	switch {
	case errors.As(err, &syntax):
		return badRequest("malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("the request body must be a JSON object, not a JSON %s", typ.Value)
		}
		return badRequest("field %s: want %s, got a JSON %s", typ.Field, jsonKind(typ.Type.String()), typ.Value)
	case errors.As(err, &fe):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("the JSON body ends too early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return badRequest("malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonKind names a Go type of a request field the way a JSON client thinks of it.
func jsonKind(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "string":
		return "a string"
	case "int", "int32", "int64":
		return "an integer"
	case "bool":
		return "true or false"
	}
	return "another type"
}

// required fails with a FieldError when a field was absent (or null).
func required[T any](field string, v *T) (T, error) {
	if v == nil {
		var zero T
		return zero, store.Invalid(field, "is required")
	}
	return *v, nil
}

// parseTime reads an RFC 3339 time (fractional seconds allowed), kept to the millisecond in UTC.
func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, store.Invalid(field, "want an RFC 3339 time such as 2026-11-25T18:00:00Z, got %q", truncate(s, 40))
	}
	return t.UTC().Truncate(time.Millisecond), nil
}

// pathID reads an id from the route: a decimal integer from 1 to 2^53-1.
func pathID(r *http.Request, name string) (int64, error) {
	return parseID(name, chi.URLParam(r, name))
}

func parseID(name, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || !store.ValidID(id) || (len(s) > 1 && s[0] == '0') || s[0] == '+' {
		return 0, store.Invalid(name, "want a positive integer below 2^53, got %q", truncate(s, 40))
	}
	return id, nil
}

// queryInt reads an optional integer query parameter between lo and hi; absent means def.
func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, store.Invalid(name, "want an integer from %d to %d, got %q", lo, hi, truncate(s, 40))
	}
	return n, nil
}

// pageRequest reads limit (default 20, at most 100) and the opaque cursor of a list.
func pageRequest(r *http.Request) (store.PageRequest, error) {
	limit, err := queryInt(r, "limit", store.DefaultLimit, 1, store.MaxLimit)
	if err != nil {
		return store.PageRequest{}, err
	}
	req := store.PageRequest{Limit: limit}
	if s := r.URL.Query().Get("cursor"); s != "" {
		c, err := store.ParseCursor(s)
		if err != nil {
			return store.PageRequest{}, err
		}
		req.After = &c
	}
	return req, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// appender is a value that encodes itself, as json.Marshal would, without reflection (store.Order).
type appender interface{ AppendJSON(b []byte) []byte }

// writeJSON answers v as application/json with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	var b []byte
	if a, ok := v.(appender); ok {
		b = a.AppendJSON(make([]byte, 0, 192))
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return fmt.Errorf("encode answer: %w", err)
		}
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

// list is the answer of a cursor-paged list: {"items":[...],"next_cursor":"..."}, next_cursor absent
// on the last page.
type list[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

func listOf[T any](p store.Page[T]) list[T] {
	l := list[T]{Items: p.Items}
	if l.Items == nil {
		l.Items = []T{}
	}
	if p.Next != nil {
		l.NextCursor = p.Next.String()
	}
	return l
}
