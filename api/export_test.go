package api

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
)

// Internals for the black-box tests of package api_test.
var (
	ParseCreateUser    = parseCreateUser
	ParseCreateCreator = parseCreateCreator
	ParseCreateProduct = parseCreateProduct
	ParseCreateDrop    = parseCreateDrop
)

// ErrorAnswer is the status and problem code writeError gives err.
func ErrorAnswer(err error) (status int, contentType string) {
	a := &API{logger: slog.New(slog.DiscardHandler)}
	rec := httptest.NewRecorder()
	a.writeError(rec, httptest.NewRequest(http.MethodPost, "/", nil), err)
	return rec.Code, rec.Header().Get("Content-Type")
}
