package store

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text limits in characters (Unicode code points), the same as the schema's CHECK constraints.
const (
	MaxNameLen        = 100
	MaxEmailLen       = 254
	MaxProfileNameLen = 100
	MaxTitleLen       = 200
	MaxDescriptionLen = 5000
)

// MaxID is the largest id the API accepts or hands out: ids are JSON numbers and stay below 2^53 so
// every client reads them exactly.
const MaxID = 1<<53 - 1

// ValidID reports whether id can name a row: 1 to MaxID.
func ValidID(id int64) bool { return id >= 1 && id <= MaxID }

// textRule says what a text field accepts.
type textRule struct {
	max       int  // characters
	required  bool // must contain something other than white space
	multiline bool // newlines and tabs allowed
}

// checkText validates a text field: valid UTF-8, within the length, no control characters (other than
// newline, carriage return and tab where multiline), and not blank when required.
func checkText(field, v string, rule textRule) error {
	if !utf8.ValidString(v) {
		return Invalid(field, "is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > rule.max {
		return Invalid(field, "is %d characters long, the limit is %d", n, rule.max)
	}
	for i, r := range v {
		if rule.multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return Invalid(field, "contains the control character %U at byte %d", r, i)
		}
	}
	if rule.required && strings.TrimSpace(v) == "" {
		return Invalid(field, "must not be empty")
	}
	return nil
}

// checkEmail validates an address the way the schema does (3 to 254 characters, an @ after the first
// character), and refuses white space and control characters.
func checkEmail(field, v string) error {
	if err := checkText(field, v, textRule{max: MaxEmailLen, required: true}); err != nil {
		return err
	}
	at := strings.IndexByte(v, '@')
	switch {
	case utf8.RuneCountInString(v) < 3:
		return Invalid(field, "is too short to be an address")
	case strings.IndexFunc(v, unicode.IsSpace) >= 0:
		return Invalid(field, "must not contain white space")
	case at < 1 || at == len(v)-1:
		return Invalid(field, "is not an address like name@example.com")
	}
	return nil
}
