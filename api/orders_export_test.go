package api

import "strconv"

// ParsePlaceOrder is parsePlaceOrder, for the fuzz target of package api_test.
var ParsePlaceOrder = parsePlaceOrder

// DecodeOrderBody decodes body the slow way (decodeJSON) and the fast way, for the differential fuzz
// target: fastOK is false when the fast way declined.
func DecodeOrderBody(body []byte) (slow, fast [3]*string, fastOK bool, slowErr error) {
	show := func(r placeOrderRequest) [3]*string {
		var out [3]*string
		if r.DropID != nil {
			s := strconv.FormatInt(*r.DropID, 10)
			out[0] = &s
		}
		if r.Quantity != nil {
			s := strconv.FormatInt(*r.Quantity, 10)
			out[1] = &s
		}
		out[2] = r.IdempotencyKey
		return out
	}
	var s placeOrderRequest
	slowErr = decodeJSON(body, &s)
	f, fastOK := parseOrderBodyFast(body)
	return show(s), show(f), fastOK, slowErr
}
