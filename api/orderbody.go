package api

import (
	"strconv"
	"unicode/utf8"
)

// parseOrderBodyFast reads the usual body of POST /orders, an object of drop_id, quantity and
// idempotency_key written plainly, without encoding/json's reflection (every order reads one). It
// answers ok = false for anything else, such as escapes in a string, a number with a fraction or an
// exponent, a key in another case, another field, or malformed JSON, and the caller then decodes
// the body with decodeJSON, which explains what is wrong. When ok, req is what decodeJSON would
// have decoded (FuzzOrderBodyFastPath checks it).
func parseOrderBodyFast(body []byte) (req placeOrderRequest, ok bool) {
	if !utf8.Valid(body) {
		return req, false
	}
	p := jsonScanner{b: body}
	if !p.consume('{') {
		return req, false
	}
	if p.consume('}') {
		return req, p.end()
	}
	for {
		key, ok := p.plainString()
		if !ok || !p.consume(':') {
			return req, false
		}
		switch key {
		case "drop_id":
			if req.DropID, ok = p.intOrNull(); !ok {
				return req, false
			}
		case "quantity":
			if req.Quantity, ok = p.intOrNull(); !ok {
				return req, false
			}
		case "idempotency_key":
			if p.null() {
				req.IdempotencyKey = nil
				break
			}
			s, ok := p.plainString()
			if !ok {
				return req, false
			}
			req.IdempotencyKey = &s
		default:
			return req, false
		}
		if p.consume(',') {
			continue
		}
		if p.consume('}') {
			return req, p.end()
		}
		return req, false
	}
}

// jsonScanner walks the few JSON forms parseOrderBodyFast accepts.
type jsonScanner struct {
	b []byte
	i int
}

func (p *jsonScanner) skipSpace() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, if c is next.
func (p *jsonScanner) consume(c byte) bool {
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (p *jsonScanner) end() bool {
	p.skipSpace()
	return p.i == len(p.b)
}

// plainString reads a string without escapes or control characters.
func (p *jsonScanner) plainString() (string, bool) {
	if !p.consume('"') {
		return "", false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\' || c < 0x20:
			return "", false
		}
	}
	return "", false
}

// null reads the literal null, if it is next.
func (p *jsonScanner) null() bool {
	p.skipSpace()
	if len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

// intOrNull reads null (nil) or an integer of at most 18 digits, written as JSON writes integers
// (-?(0|[1-9][0-9]*)); a fraction or an exponent is not ok.
func (p *jsonScanner) intOrNull() (*int64, bool) {
	if p.null() {
		return nil, true
	}
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	n := p.i - digits
	if n == 0 || n > 18 || (p.b[digits] == '0' && n > 1) {
		return nil, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	v, err := strconv.ParseInt(string(p.b[start:p.i]), 10, 64)
	if err != nil {
		return nil, false
	}
	return &v, true
}
