package redis

// ParsePage is parsePage, for the fuzz target.
var ParsePage = parsePage

// LeaseKeys is how many keys l keeps leases for (tests only).
func LeaseKeys(l *Limiter) int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.keys)
		sh.mu.Unlock()
	}
	return n
}
