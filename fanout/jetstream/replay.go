package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
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

	// One wildcard subscription receives the answers of every batched read (a subscription per read
	// would be two more protocol operations per read in a reconnect storm).
	muxOnce   sync.Once
	muxErr    error
	muxPrefix string
	muxSeq    atomic.Uint64
	muxMu     sync.Mutex
	muxSub    *nats.Subscription
	waiting   map[string]chan *nats.Msg
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
	seq     uint64
	subject string
	data    []byte
}

// Replay calls fn, oldest first, with every message (its sequence, subject and data) stored after
// sequence after on one of subjects, and with the newest message after it of each of newest (subjects
// whose older messages are superseded, such as stock ticks). complete is false when there are more than limit messages or when the message at
// after is no longer stored (the stream has dropped part of the gap).
func (r *Replayer) Replay(ctx context.Context, after uint64, subjects, newest []string, limit int,
	fn func(seq uint64, subject string, data []byte)) (complete bool, err error) {
	var msgs []storedMsg
	last := after
	// Two passes: the second reads what was stored while the first ran, so that what Replay returns
	// reaches at least the moment it was called (a message can be routed to live subscribers a moment
	// before the stream has stored it).
	for pass := range 2 {
		from := after
		if pass == 1 {
			from = last
		}
		for _, q := range plan(subjects) {
			got, over, err := r.readAfter(ctx, from, q, limit-len(msgs))
			if err != nil {
				return false, err
			}
			if over {
				return false, nil
			}
			for _, m := range got {
				last = max(last, m.seq)
			}
			msgs = append(msgs, got...)
		}
		if pass == 0 {
			for _, subject := range newest {
				m, ok, err := r.last(ctx, subject)
				if err != nil {
					return false, err
				}
				if ok && m.seq > after {
					msgs = append(msgs, m)
				}
			}
		}
	}
	if len(msgs) > limit {
		return false, nil
	}
	if after > 0 {
		// If the message at after is still stored, nothing after it was dropped before the reads above
		// (a stream drops its oldest messages first).
		ok, err := r.exists(ctx, after)
		if err != nil || !ok {
			return false, err
		}
	}
	slices.SortFunc(msgs, func(a, b storedMsg) int { return compareSeq(a.seq, b.seq) })
	msgs = slices.CompactFunc(msgs, func(a, b storedMsg) bool { return a.seq == b.seq })
	for _, m := range msgs {
		fn(m.seq, m.subject, m.data)
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
	reply, answers, done, err := r.openReply()
	if err != nil {
		return nil, false, err
	}
	defer done()
	var out []storedMsg
	next := after + 1
	for {
		req, _ := json.Marshal(directGet{Seq: next, NextFor: q.subject, Batch: batchSize, MaxBytes: 1 << 20})
		if err := r.nc.PublishRequest("$JS.API.DIRECT.GET."+r.stream, reply, req); err != nil {
			return nil, false, fmt.Errorf("jetstream: replay: %w", err)
		}
		more := false
		for {
			m, err := r.nextAnswer(ctx, answers)
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
			subject := m.Header.Get("Nats-Subject")
			if q.keep != nil && !q.keep[subject] {
				continue
			}
			out = append(out, storedMsg{seq: seq, subject: subject, data: m.Data})
			if len(out) > limit {
				return nil, true, nil
			}
		}
		if !more {
			return out, false, nil
		}
	}
}

// openReply returns a reply subject of the shared answer subscription and the channel its answers
// arrive on; done gives it back.
func (r *Replayer) openReply() (reply string, answers chan *nats.Msg, done func(), err error) {
	r.muxOnce.Do(func() {
		r.muxPrefix = r.nc.NewInbox() + "."
		r.waiting = map[string]chan *nats.Msg{}
		r.muxSub, r.muxErr = r.nc.Subscribe(r.muxPrefix+"*", func(m *nats.Msg) {
			r.muxMu.Lock()
			ch := r.waiting[m.Subject]
			r.muxMu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default: // more than a batch: the reader has given up on this reply
				}
			}
		})
		if r.muxErr == nil {
			r.muxErr = r.muxSub.SetPendingLimits(-1, 64<<20)
		}
	})
	if r.muxErr != nil {
		return "", nil, nil, fmt.Errorf("jetstream: replay: %w", r.muxErr)
	}
	reply = r.muxPrefix + strconv.FormatUint(r.muxSeq.Add(1), 36)
	answers = make(chan *nats.Msg, batchSize+8) // a batch, its end, and room for a stray answer
	r.muxMu.Lock()
	r.waiting[reply] = answers
	r.muxMu.Unlock()
	return reply, answers, func() {
		r.muxMu.Lock()
		delete(r.waiting, reply)
		r.muxMu.Unlock()
	}, nil
}

func (r *Replayer) nextAnswer(ctx context.Context, answers chan *nats.Msg) (*nats.Msg, error) {
	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case m := <-answers:
		if m.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		return m, nil
	case <-t.C:
		return nil, fmt.Errorf("jetstream: replay: %w", nats.ErrTimeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("jetstream: replay: %w", ctx.Err())
	}
}

// Close gives up the answer subscription.
func (r *Replayer) Close() {
	r.muxMu.Lock()
	defer r.muxMu.Unlock()
	if r.muxSub != nil {
		_ = r.muxSub.Unsubscribe()
	}
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
		out = append(out, storedMsg{seq: m.Sequence, subject: m.Subject, data: m.Data})
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
				return storedMsg{seq: seq, subject: m.Header.Get("Nats-Subject"), data: m.Data}, true, nil
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
	return storedMsg{seq: m.Sequence, subject: m.Subject, data: m.Data}, true, nil
}
