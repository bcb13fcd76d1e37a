package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Replayer reads a stream's stored messages by subject, for hubs that resume a client (it implements
// hub.Replayer). It uses JetStream's batched direct get ($JS.API.DIRECT.GET.<stream>, server >= 2.11, on
// a stream with AllowDirect): one request per subject returns every message of that subject after a
// sequence, served from the stream's per-subject index, with no consumer created. The research notes
// (research/realtime-anchors.md §4) found that consumers with many filter subjects are slow; a
// reconnect storm makes thousands of these reads at once. On a stream without AllowDirect it falls back
// to one JetStream API request per message.
type Replayer struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   string
	timeout  time.Duration
	noDirect atomic.Bool
}

// ReplayerConfig tunes a Replayer. Zero values are the documented defaults.
type ReplayerConfig struct {
	// Stream is the stream name. Default DefaultStreamName.
	Stream string
	// Timeout bounds one request. Default 5s.
	Timeout time.Duration
}

// NewReplayer returns a Replayer on nc.
func NewReplayer(nc *nats.Conn, cfg ReplayerConfig) (*Replayer, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStreamName
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Replayer{nc: nc, js: js, stream: cfg.Stream, timeout: cfg.Timeout}, nil
}

// wildcardAbove is how many subjects of one family (ld.creator.*) are read one by one; more are read
// with the family's wildcard and filtered here.
const wildcardAbove = 32

// storedMsg is one message read back.
type storedMsg struct {
	seq  uint64
	data []byte
}

// Replay calls fn, oldest first, with every message stored after sequence after on one of subjects, and
// with the newest message after it of each of newest (subjects whose older messages are superseded, such
// as stock ticks). complete is false when there are more than limit messages or when the message at
// after is no longer stored (the stream has dropped part of the gap).
func (r *Replayer) Replay(ctx context.Context, after uint64, subjects, newest []string, limit int,
	fn func(seq uint64, data []byte)) (complete bool, err error) {
	var msgs []storedMsg
	for _, q := range plan(subjects) {
		got, over, err := r.readAfter(ctx, after, q, limit-len(msgs))
		if err != nil {
			return false, err
		}
		if over {
			return false, nil
		}
		msgs = append(msgs, got...)
	}
	for _, subject := range newest {
		m, ok, err := r.last(ctx, subject)
		if err != nil {
			return false, err
		}
		if ok && m.seq > after {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) > limit {
		return false, nil
	}
	if after > 0 {
		// Read last: if the message at after is still stored, nothing after it was dropped before the
		// reads above (a stream drops its oldest messages first).
		ok, err := r.exists(ctx, after)
		if err != nil || !ok {
			return false, err
		}
	}
	slices.SortFunc(msgs, func(a, b storedMsg) int { return compareSeq(a.seq, b.seq) })
	msgs = slices.CompactFunc(msgs, func(a, b storedMsg) bool { return a.seq == b.seq })
	for _, m := range msgs {
		fn(m.seq, m.data)
	}
	return true, nil
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// query is one read: a subject, or a family wildcard with the subjects to keep.
type query struct {
	subject string
	keep    map[string]bool // nil: keep all
}

// plan turns subjects into reads: one per subject, or one wildcard per crowded family.
func plan(subjects []string) []query {
	families := map[string][]string{}
	var order []string
	for _, s := range subjects {
		i := strings.LastIndexByte(s, '.')
		fam := s[:i+1]
		if _, ok := families[fam]; !ok {
			order = append(order, fam)
		}
		families[fam] = append(families[fam], s)
	}
	var out []query
	for _, fam := range order {
		members := families[fam]
		if len(members) <= wildcardAbove || fam == "" {
			for _, s := range members {
				out = append(out, query{subject: s})
			}
			continue
		}
		keep := make(map[string]bool, len(members))
		for _, s := range members {
			keep[s] = true
		}
		out = append(out, query{subject: fam + "*", keep: keep})
	}
	return out
}

// directGet is the request of $JS.API.DIRECT.GET (nats-server JSApiMsgGetRequest).
type directGet struct {
	Seq      uint64 `json:"seq,omitempty"`
	LastFor  string `json:"last_by_subj,omitempty"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch,omitempty"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

const batchSize = 256

var errNoDirect = errors.New("jetstream: stream does not allow direct get")

// readAfter reads the messages of q after sequence after; over reports more than limit.
func (r *Replayer) readAfter(ctx context.Context, after uint64, q query, limit int) (msgs []storedMsg, over bool, err error) {
	if !r.noDirect.Load() {
		msgs, over, err = r.readAfterDirect(ctx, after, q, limit)
		if !errors.Is(err, errNoDirect) {
			return msgs, over, err
		}
		r.noDirect.Store(true)
	}
	return r.readAfterAPI(ctx, after, q, limit)
}

func (r *Replayer) readAfterDirect(ctx context.Context, after uint64, q query, limit int) ([]storedMsg, bool, error) {
	inbox := r.nc.NewRespInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, fmt.Errorf("jetstream: replay: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var out []storedMsg
	next := after + 1
	for {
		req, _ := json.Marshal(directGet{Seq: next, NextFor: q.subject, Batch: batchSize, MaxBytes: 1 << 20})
		if err := r.nc.PublishRequest("$JS.API.DIRECT.GET."+r.stream, inbox, req); err != nil {
			return nil, false, fmt.Errorf("jetstream: replay: %w", err)
		}
		more := false
		for {
			m, err := r.nextMsg(ctx, sub)
			if errors.Is(err, nats.ErrNoResponders) {
				return nil, false, errNoDirect
			}
			if err != nil {
				return nil, false, err
			}
			status := m.Header.Get("Status")
			if status == "404" {
				return out, false, nil // nothing (more) stored
			}
			if status == "204" { // end of batch
				pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				lastSeq, _ := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64)
				if pending > 0 && lastSeq >= next {
					next, more = lastSeq+1, true
				}
				break
			}
			if status == "503" {
				return nil, false, errNoDirect
			}
			if status != "" {
				return nil, false, fmt.Errorf("jetstream: replay: direct get: %s %s", status, m.Header.Get("Description"))
			}
			seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
			if err != nil {
				return nil, false, fmt.Errorf("jetstream: replay: message without sequence")
			}
			if q.keep != nil && !q.keep[m.Header.Get("Nats-Subject")] {
				continue
			}
			out = append(out, storedMsg{seq: seq, data: m.Data})
			if len(out) > limit {
				return nil, true, nil
			}
		}
		if !more {
			return out, false, nil
		}
	}
}

func (r *Replayer) nextMsg(ctx context.Context, sub *nats.Subscription) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("jetstream: replay: %w", err)
	}
	return m, nil
}

// readAfterAPI is the fallback without direct get: one JetStream API request per message.
func (r *Replayer) readAfterAPI(ctx context.Context, after uint64, q query, limit int) ([]storedMsg, bool, error) {
	st, err := r.streamHandle(ctx)
	if err != nil {
		return nil, false, err
	}
	var out []storedMsg
	next := after + 1
	for {
		rctx, cancel := context.WithTimeout(ctx, r.timeout)
		m, err := st.GetMsg(rctx, next, jetstream.WithGetMsgSubject(q.subject))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("jetstream: replay: %w", err)
		}
		next = m.Sequence + 1
		if q.keep != nil && !q.keep[m.Subject] {
			continue
		}
		out = append(out, storedMsg{seq: m.Sequence, data: m.Data})
		if len(out) > limit {
			return nil, true, nil
		}
	}
}

func (r *Replayer) streamHandle(ctx context.Context) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	st, err := r.js.Stream(ctx, r.stream)
	if err != nil {
		return nil, fmt.Errorf("jetstream: replay: stream %s: %w", r.stream, err)
	}
	return st, nil
}

// last is the newest message of subject.
func (r *Replayer) last(ctx context.Context, subject string) (storedMsg, bool, error) {
	return r.get(ctx, directGet{LastFor: subject})
}

// exists reports whether the message at seq is still stored.
func (r *Replayer) exists(ctx context.Context, seq uint64) (bool, error) {
	_, ok, err := r.get(ctx, directGet{Seq: seq})
	return ok, err
}

// get is a single-message read.
func (r *Replayer) get(ctx context.Context, req directGet) (storedMsg, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if !r.noDirect.Load() {
		body, _ := json.Marshal(req)
		m, err := r.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+r.stream, body)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			r.noDirect.Store(true)
		case err != nil:
			return storedMsg{}, false, fmt.Errorf("jetstream: replay: %w", err)
		default:
			switch status := m.Header.Get("Status"); status {
			case "":
				seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
				if err != nil {
					return storedMsg{}, false, fmt.Errorf("jetstream: replay: message without sequence")
				}
				return storedMsg{seq: seq, data: m.Data}, true, nil
			case "404":
				return storedMsg{}, false, nil
			default:
				return storedMsg{}, false, fmt.Errorf("jetstream: replay: direct get: %s %s", status, m.Header.Get("Description"))
			}
		}
	}
	st, err := r.streamHandle(ctx)
	if err != nil {
		return storedMsg{}, false, err
	}
	var m *jetstream.RawStreamMsg
	if req.LastFor != "" {
		m, err = st.GetLastMsgForSubject(ctx, req.LastFor)
	} else {
		m, err = st.GetMsg(ctx, req.Seq)
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return storedMsg{}, false, nil
	}
	if err != nil {
		return storedMsg{}, false, fmt.Errorf("jetstream: replay: %w", err)
	}
	return storedMsg{seq: m.Sequence, data: m.Data}, true, nil
}
