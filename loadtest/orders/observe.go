package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// What a run shows beyond its answers: the server's own per-stage histograms (livedrops_order_*,
// the HTTP duration of POST /orders), and with -pg-stats PostgreSQL's view (pg_stat_statements and
// the wait events of the server's sessions, sampled).

// stages reads the means of the server's order histograms from its /metrics, as one line.
func stages(base string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return "metrics: " + err.Error()
	}
	defer resp.Body.Close()
	sums, counts := map[string]float64{}, map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		labels := ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labels = name[:i], name[i:]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			continue
		}
		key := strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
		switch {
		case strings.HasPrefix(key, "livedrops_http_request_duration_seconds"):
			if !strings.Contains(labels, `route="/orders"`) || !strings.Contains(labels, `method="POST"`) {
				continue
			}
		case strings.HasPrefix(key, "livedrops_order_batch_stage_seconds"):
			for _, stage := range []string{"read", "wait", "decide", "write"} {
				if strings.Contains(labels, `stage="`+stage+`"`) {
					key += "/" + stage
				}
			}
		case strings.HasPrefix(key, "livedrops_order_duration_seconds"):
			for _, outcome := range []string{"confirmed", "replayed", "sold_out"} {
				if strings.Contains(labels, `outcome="`+outcome+`"`) {
					key += "/" + outcome
				}
			}
		case strings.HasPrefix(key, "livedrops_order_") || strings.HasPrefix(key, "livedrops_ratelimit_") ||
			strings.HasPrefix(key, "livedrops_db_pool_acquire") || strings.HasPrefix(key, "livedrops_db_pool_wait"):
		default:
			continue
		}
		switch {
		case strings.HasSuffix(name, "_sum"):
			sums[key] += v
		case strings.HasSuffix(name, "_count"):
			counts[key] += v
		case strings.HasSuffix(name, "_total"):
			counts[name+labels] += v
		}
	}
	var parts []string
	for k, c := range counts {
		if s, ok := sums[k]; ok && c > 0 {
			unit, scale := "ms", 1000.0
			if strings.HasSuffix(k, "batch_size") {
				unit, scale = "", 1
			}
			parts = append(parts, fmt.Sprintf("%s=%.2f%s(n=%.0f)", strings.TrimPrefix(k, "livedrops_"), s/c*scale, unit, c))
		} else if !ok && strings.Contains(k, "_total") {
			parts = append(parts, fmt.Sprintf("%s=%.0f", strings.TrimPrefix(k, "livedrops_"), c))
		}
	}
	sort.Strings(parts)
	return "stages " + strings.Join(parts, " ")
}

// pgWaits samples the wait events of the client sessions of the livedrops database until stop is
// closed, and returns them as shares of the samples.
func (st *stack) pgWaits(ctx context.Context, stop <-chan struct{}) func() string {
	var mu sync.Mutex
	counts := map[string]int{}
	samples := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := st.pool.Query(ctx, `SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, state)
FROM pg_stat_activity
WHERE datname = 'livedrops' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND state <> 'idle'`)
			if err != nil {
				continue
			}
			mu.Lock()
			samples++
			for rows.Next() {
				var typ, ev string
				if rows.Scan(&typ, &ev) == nil {
					counts[typ+":"+ev]++
				}
			}
			mu.Unlock()
			rows.Close()
		}
	}()
	return func() string {
		<-done
		mu.Lock()
		defer mu.Unlock()
		type kv struct {
			k string
			n int
		}
		var all []kv
		for k, n := range counts {
			all = append(all, kv{k, n})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
		var parts []string
		for _, e := range all[:min(len(all), 10)] {
			parts = append(parts, fmt.Sprintf("%s=%.2f", e.k, float64(e.n)/float64(max(samples, 1))))
		}
		return fmt.Sprintf("pg_waits (mean sessions not idle, %d samples) %s", samples, strings.Join(parts, " "))
	}
}

// pgStatements writes the statements of the run that took the most time, from pg_stat_statements.
func (st *stack) pgStatements(ctx context.Context, w io.Writer, attempts int) {
	rows, err := st.pool.Query(ctx, `SELECT calls, total_exec_time, rows, shared_blks_hit + shared_blks_read,
       wal_bytes, regexp_replace(left(query, 110), '\s+', ' ', 'g')
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'livedrops')
ORDER BY total_exec_time DESC LIMIT 14`)
	if err != nil {
		fmt.Fprintln(w, "pg_stat_statements:", err)
		return
	}
	defer rows.Close()
	fmt.Fprintf(w, "  %8s %9s %9s %9s %9s %10s  %s\n", "calls", "total_ms", "us/call", "us/attempt", "rows", "wal_bytes", "query")
	for rows.Next() {
		var calls, nrows, blks, wal int64
		var total float64
		var q string
		if err := rows.Scan(&calls, &total, &nrows, &blks, &wal, &q); err != nil {
			fmt.Fprintln(w, "pg_stat_statements:", err)
			return
		}
		fmt.Fprintf(w, "  %8d %9.1f %9.1f %9.1f %9d %10d  %s\n", calls, total, total*1000/float64(max(calls, 1)),
			total*1000/float64(max(attempts, 1)), nrows, wal, q)
	}
}
