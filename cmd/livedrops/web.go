package main

import (
	"fmt"
	"net"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/web"
)

// mountWeb serves the live drop page, the SDK and the service worker (roles api and all).
func (a *App) mountWeb(r chi.Router) error {
	site, err := web.New()
	if err != nil {
		return fmt.Errorf("web: %w", err)
	}
	site.Routes(r)
	return nil
}

// pageURL is the address a person opens for the page served on addr: a wildcard or empty host reads
// as localhost.
func pageURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr + "/"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}
