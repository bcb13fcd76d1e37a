package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestPageURL(t *testing.T) {
	tests := []struct{ addr, want string }{
		{":8080", "http://localhost:8080/"},
		{"0.0.0.0:80", "http://localhost:80/"},
		{"[::]:8080", "http://localhost:8080/"},
		{"127.0.0.1:18009", "http://127.0.0.1:18009/"},
		{"[::1]:9000", "http://[::1]:9000/"},
		{"shop.example:443", "http://shop.example:443/"},
	}
	for _, tc := range tests {
		if got := pageURL(tc.addr); got != tc.want {
			t.Errorf("pageURL(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestLogFormatAuto: auto writes JSON to what is not a terminal (a file, a pipe, a collector); text and
// json are explicit overrides.
func TestLogFormatAuto(t *testing.T) {
	for _, tc := range []struct {
		format string
		json   bool
	}{{"auto", true}, {"json", true}, {"text", false}} {
		var buf bytes.Buffer
		newLogger(Config{Role: "all", LogFormat: tc.format}, &buf).Info("hello", "k", 1)
		line := strings.TrimSpace(buf.String())
		if isJSON := json.Valid([]byte(line)); isJSON != tc.json {
			t.Errorf("-log-format %s to a buffer wrote %q, want JSON: %v", tc.format, line, tc.json)
		}
	}
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer counts as a terminal")
	}
}
