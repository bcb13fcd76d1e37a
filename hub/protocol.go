package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/livedrops/livedrops/fanout"
)

// Close codes the hub sends in a WebSocket close frame (docs/protocol.md is the client's reference). The
// 4000-4099 range means "reconnect" (with ?since= to resume), the 4400-4499 range "do not reconnect as
// is" (the client must change something first: its token, its frames, its number of sockets).
const (
	// CloseDraining: the hub is shutting down or shedding load. Reconnect after the delay given in the
	// reason ("retry_after_ms=1234"), with ?since= to resume.
	CloseDraining = 4000
	// CloseSlowReader: the socket did not keep up with its events. Reconnect at once with ?since=.
	CloseSlowReader = 4001
	// CloseServerError: the hub failed on this socket (a dependency was down while it was set up, a
	// write failed). Reconnect with backoff and ?since=.
	CloseServerError = 4002
	// CloseBadFrame: the client sent a frame the protocol does not allow. Do not reconnect unchanged.
	CloseBadFrame = 4400
	// CloseUnauthorized: no token, or a bad or expired one. Reconnect only with a new token.
	CloseUnauthorized = 4401
	// CloseForbidden: the page's Origin is not allowed. Do not reconnect.
	CloseForbidden = 4403
	// CloseTooManyFrames: the client sent frames faster than the hub allows (Config.FrameRate, with
	// bursts of Config.FrameBurst). Do not reconnect before sending fewer.
	CloseTooManyFrames = 4408
	// CloseTooManySockets: the user already holds the most sockets allowed on this hub. Do not reconnect
	// before closing another.
	CloseTooManySockets = 4429
)

// Reconnect reports whether a client that was closed with code should reconnect on its own.
func Reconnect(code int) bool { return code >= 4000 && code < 4100 }

// Op is the verb of a client frame.
type Op string

// The client frames.
const (
	OpWatch   Op = "watch"   // {"op":"watch","drop_id":42}: also receive the drop's stock ticks and lifecycle
	OpUnwatch Op = "unwatch" // {"op":"unwatch","drop_id":42}
	OpPing    Op = "ping"    // {"op":"ping"}: the hub answers {"type":"pong"} (for clients that cannot send pings)
)

// ClientFrame is one frame a client sends.
type ClientFrame struct {
	Op     Op
	DropID int64
}

// maxID is the largest id that survives a JSON number in a browser (2^53 - 1).
const maxID = 1<<53 - 1

// ErrBadFrame wraps every reason a client frame is refused.
var ErrBadFrame = errors.New("bad frame")

// ParseClientFrame decodes a client frame: a JSON object with "op" and, for watch and unwatch, a positive
// integer "drop_id". Unknown fields are ignored so clients can grow; anything else is ErrBadFrame.
func ParseClientFrame(b []byte) (ClientFrame, error) {
	var w struct {
		Op     *string          `json:"op"`
		DropID *json.RawMessage `json:"drop_id"`
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return ClientFrame{}, fmt.Errorf("%w: not a JSON object", ErrBadFrame)
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: %w", ErrBadFrame, err)
	}
	if w.Op == nil {
		return ClientFrame{}, fmt.Errorf("%w: no op", ErrBadFrame)
	}
	f := ClientFrame{Op: Op(*w.Op)}
	switch f.Op {
	case OpPing:
		return f, nil
	case OpWatch, OpUnwatch:
	default:
		return ClientFrame{}, fmt.Errorf("%w: unknown op %q", ErrBadFrame, *w.Op)
	}
	if w.DropID == nil {
		return ClientFrame{}, fmt.Errorf("%w: %s without drop_id", ErrBadFrame, f.Op)
	}
	id, err := strconv.ParseInt(string(*w.DropID), 10, 64)
	if err != nil || id <= 0 || id > maxID {
		return ClientFrame{}, fmt.Errorf("%w: drop_id must be a positive integer", ErrBadFrame)
	}
	f.DropID = id
	return f, nil
}

// ParseEventID checks a resume position (?since= or Last-Event-ID): event ids are decimal numbers from
// one sequence, 1 to 19 digits without a leading zero or sign. ok is false for anything else.
func ParseEventID(s string) (id string, ok bool) {
	if len(s) == 0 || len(s) > 19 || s[0] == '0' {
		return "", false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return "", false
		}
	}
	if _, err := strconv.ParseInt(s, 10, 64); err != nil {
		return "", false
	}
	return s, true
}

// ParseDropList parses the ?watch= parameter: comma-separated drop ids, at most max of them, duplicates
// dropped. It lets a reconnecting client resume its watches with the rest of its interest.
func ParseDropList(s string, maxDrops int) ([]int64, error) {
	if s == "" {
		return nil, nil
	}
	var out []int64
	seen := map[int64]bool{}
	for len(s) > 0 {
		part := s
		if i := strings.IndexByte(s, ','); i >= 0 {
			part, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		id, err := strconv.ParseInt(part, 10, 64)
		if err != nil || id <= 0 || id > maxID {
			return nil, fmt.Errorf("watch: %q is not a drop id", part)
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
		if len(out) > maxDrops {
			return nil, fmt.Errorf("watch: more than %d drops", maxDrops)
		}
	}
	return out, nil
}

// hello is the first frame on every socket.
type hello struct {
	Type          string `json:"type"`
	ConnID        string `json:"conn_id"`
	ServerTime    string `json:"server_time"`
	ReplayWindowS int64  `json:"replay_window_s"`
	Recovered     *bool  `json:"recovered,omitempty"`
}

func encodeHello(connID string, now time.Time, window time.Duration, resumed, recovered bool) []byte {
	h := hello{Type: "hello", ConnID: connID, ServerTime: now.UTC().Format(fanout.TimeFormat),
		ReplayWindowS: int64(window / time.Second)}
	if resumed {
		h.Recovered = &recovered
	}
	b, _ := json.Marshal(h) // cannot fail: plain strings and numbers
	return b
}

// errorFrame tells the client a frame was refused without closing the socket.
type errorFrame struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Op     Op     `json:"op,omitempty"`
	DropID int64  `json:"drop_id,omitempty"`
}

func encodeError(code, detail string, f ClientFrame) []byte {
	b, _ := json.Marshal(errorFrame{Type: "error", Code: code, Detail: detail, Op: f.Op, DropID: f.DropID})
	return b
}

var pongFrame = []byte(`{"type":"pong"}`)

// encodeWatching acknowledges a watch: from this frame on the socket receives the drop's events.
func encodeWatching(dropID int64) []byte {
	return []byte(`{"type":"watching","drop_id":` + strconv.FormatInt(dropID, 10) + `}`)
}

// drainReason is the close reason of CloseDraining: a hint after which the client should reconnect.
func drainReason(after time.Duration) string {
	return "retry_after_ms=" + strconv.FormatInt(after.Milliseconds(), 10)
}
