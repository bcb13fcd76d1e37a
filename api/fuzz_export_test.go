package api

import (
	"net/http/httptest"

	"github.com/livedrops/livedrops/store"
)

// The path and query parsers, for the fuzz targets of package api_test.
var ParseID = parseID

// PageRequestOf reads limit and cursor from a raw query string, as a list route does.
func PageRequestOf(rawQuery string) (store.PageRequest, error) {
	r := httptest.NewRequest("GET", "/", nil)
	r.URL.RawQuery = rawQuery
	return pageRequest(r)
}

// QueryIntOf reads one integer parameter from a raw query string, as /products reads page and per_page.
func QueryIntOf(rawQuery, name string, def, lo, hi int) (int, error) {
	r := httptest.NewRequest("GET", "/", nil)
	r.URL.RawQuery = rawQuery
	return queryInt(r, name, def, lo, hi)
}
