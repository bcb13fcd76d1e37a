// Package redis adapts Redis (github.com/redis/go-redis/v9) to LiveDrops: opening a client from a URL,
// for one server or a Redis Cluster alike.
package redis

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// Open returns a client for url and checks it answers. A URL with `addr` query parameters names several
// seed nodes and opens a Redis Cluster client (redis://host1:6379?addr=host2:6379&addr=host3:6379);
// otherwise it is a single server (redis://[user:password@]host:port/db). Either way the caller sees a
// goredis.UniversalClient and works unchanged on both.
func Open(ctx context.Context, rawURL string) (goredis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis: parse url: invalid URL")
	}
	var client goredis.UniversalClient
	if u.Query().Has("addr") {
		opts, err := goredis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis: parse cluster url: %s", redact(err, rawURL))
		}
		client = goredis.NewClusterClient(opts)
	} else {
		opts, err := goredis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis: parse url: %s", redact(err, rawURL))
		}
		client = goredis.NewClient(opts)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, fmt.Errorf("redis: ping %s: %w", u.Redacted(), err)
	}
	return client, nil
}

// redact keeps a parse error from repeating the URL and its password.
func redact(err error, rawURL string) string {
	return strings.ReplaceAll(err.Error(), rawURL, "<url>")
}
