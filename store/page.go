package store

import (
	"encoding/base64"
	"encoding/binary"
	"time"
)

// Page sizes of the lists.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Cursor is a position in a newest-first keyset list: the entry's time and its id break ties. Its
// string form is opaque to clients.
type Cursor struct {
	At time.Time
	ID int64
}

// PageRequest asks for up to Limit entries after the position After (nil: from the start).
type PageRequest struct {
	Limit int
	After *Cursor
}

// Page is one page of a list; Next is the position to continue from, nil on the last page.
type Page[T any] struct {
	Items []T
	Next  *Cursor
}

const cursorVersion = 1

// maxCursorLen bounds the opaque form: a version byte and two varints take at most 21 bytes.
const maxCursorLen = 32

// String is the opaque form of c: URL-safe base64 of a version byte, the time in milliseconds and the
// id, as varints.
func (c Cursor) String() string {
	b := make([]byte, 0, 21)
	b = append(b, cursorVersion)
	b = binary.AppendVarint(b, c.At.UnixMilli())
	b = binary.AppendUvarint(b, uint64(c.ID))
	return base64.RawURLEncoding.EncodeToString(b)
}

// cursorMaxMilli bounds the times a cursor may carry: years 1970 to 9999.
var cursorMaxMilli = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// ParseCursor decodes the opaque form written by String. Anything else is a *FieldError for "cursor".
func ParseCursor(s string) (Cursor, error) {
	bad := Invalid("cursor", "is not a cursor this API handed out")
	if len(s) == 0 || len(s) > maxCursorLen {
		return Cursor{}, bad
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) < 3 || b[0] != cursorVersion {
		return Cursor{}, bad
	}
	b = b[1:]
	ms, n := binary.Varint(b)
	if n <= 0 {
		return Cursor{}, bad
	}
	b = b[n:]
	id, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) {
		return Cursor{}, bad
	}
	if ms < 0 || ms >= cursorMaxMilli || id < 1 || id > MaxID {
		return Cursor{}, bad
	}
	c := Cursor{At: time.UnixMilli(ms).UTC(), ID: int64(id)}
	if c.String() != s { // one cursor, one spelling
		return Cursor{}, bad
	}
	return c, nil
}

// msTime is a time on the wire: RFC 3339 in UTC with exactly three fractional digits.
type msTime time.Time

// TimeFormat is the layout of every time the API writes.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

func (t msTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format(TimeFormat) + `"`), nil
}

func (t *msTime) UnmarshalJSON(b []byte) error {
	var tt time.Time
	if err := tt.UnmarshalJSON(b); err != nil {
		return err
	}
	*t = msTime(tt.UTC())
	return nil
}
