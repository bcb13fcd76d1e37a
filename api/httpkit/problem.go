package httpkit

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/internal/jsonw"
)

// Problem is an RFC 9457 problem details object: the body of every error
// answer, sent as application/problem+json.
type Problem struct {
	// Type is a URI reference naming the problem type; empty means "about:blank".
	Type string `json:"type"`
	// Title is a short summary of the type; empty means http.StatusText(Status).
	Title string `json:"title"`
	// Status is the HTTP status code; zero means 500.
	Status int `json:"status"`
	// Detail explains this occurrence to a person. Internal error text never
	// belongs here.
	Detail string `json:"detail,omitempty"`
	// Code is the stable machine word clients match on, such as "not_found".
	Code string `json:"code,omitempty"`
}

// WriteProblem answers r with p as application/problem+json, filling in the
// defaults documented on Problem. A Content-Length set earlier is dropped.
func WriteProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	p = p.withDefaults()
	h := w.Header()
	h.Set("Content-Type", problemType)
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_, _ = w.Write(p.appendJSON(make([]byte, 0, 128+len(p.Detail))))
}

// appendJSON appends p as json.NewEncoder(w).Encode writes it (the fields in order, HTML-escaped,
// a newline after), without reflection: a sale answers most requests with a problem.
func (p Problem) appendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = jsonw.String(b, p.Type)
	b = append(b, `,"title":`...)
	b = jsonw.String(b, p.Title)
	b = append(b, `,"status":`...)
	b = jsonw.Int(b, int64(p.Status))
	if p.Detail != "" {
		b = append(b, `,"detail":`...)
		b = jsonw.String(b, p.Detail)
	}
	if p.Code != "" {
		b = append(b, `,"code":`...)
		b = jsonw.String(b, p.Code)
	}
	return append(b, '}', '\n')
}

const problemType = "application/problem+json"

func (p Problem) withDefaults() Problem {
	if p.Status == 0 {
		p.Status = http.StatusInternalServerError
	}
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	return p
}

// writeJSON writes v as the JSON body of a status answer. Encoding errors can
// only come from writing to a client that is gone, so they are dropped.
func writeJSON(w http.ResponseWriter, contentType string, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// NotFound answers 404 problem+json with code "not_found". It suits chi's
// Router.NotFound.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteProblem(w, r, Problem{
		Status: http.StatusNotFound,
		Code:   "not_found",
		Detail: "no resource at this path",
	})
}

// MethodNotAllowed answers 405 problem+json with code "method_not_allowed"
// and, when r was routed by chi, an Allow header listing the methods the
// path accepts. It suits chi's Router.MethodNotAllowed.
func MethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	if allow := allowedMethods(r); allow != "" {
		w.Header().Set("Allow", allow)
	}
	WriteProblem(w, r, Problem{
		Status: http.StatusMethodNotAllowed,
		Code:   "method_not_allowed",
		Detail: fmt.Sprintf("method %s is not allowed at this path", r.Method),
	})
}

// allowedMethods asks the root chi router which methods match r's path.
func allowedMethods(r *http.Request) string {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil || rctx.Routes == nil {
		return ""
	}
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	var allowed []string
	for _, m := range standardMethods() {
		if rctx.Routes.Match(chi.NewRouteContext(), m, path) {
			allowed = append(allowed, m)
		}
	}
	return strings.Join(allowed, ", ")
}

// standardMethods lists the request methods of RFC 9110 and RFC 5789.
func standardMethods() [9]string {
	return [...]string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
	}
}
