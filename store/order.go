package store

import (
	"crypto/sha256"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/livedrops/livedrops/internal/jsonw"
)

// OrderStatus is where an order stands.
type OrderStatus string

// The order statuses of the API. An order is answered only once its transaction has committed, so the
// service writes confirmed orders; pending and failed exist in the contract (202 answers, order.failed)
// and the schema, and are read back as they are.
const (
	OrderPending   OrderStatus = "pending"
	OrderConfirmed OrderStatus = "confirmed"
	OrderFailed    OrderStatus = "failed"
)

// Order limits.
const (
	// MaxIdempotencyKeyLen is the longest idempotency key, in characters (the schema's CHECK).
	MaxIdempotencyKeyLen = 255
	// MaxQuantity is the largest quantity one order may ask for (the schema's integer column); a drop's
	// max_per_user usually refuses far less.
	MaxQuantity = math.MaxInt32
)

// Order is one accepted POST /orders.
type Order struct {
	ID        int64
	UserID    int64
	DropID    int64
	Quantity  int
	Status    OrderStatus
	CreatedAt time.Time
	// FailureCode is why a failed order failed (an error code such as "sold_out"); "" otherwise.
	FailureCode string
}

// Position is o's place in the newest-first list of a user's orders (by order id).
func (o Order) Position() Cursor { return Cursor{At: o.CreatedAt, ID: o.ID} }

type orderJSON struct {
	ID          int64       `json:"order_id"`
	UserID      int64       `json:"user_id"`
	DropID      int64       `json:"drop_id"`
	Quantity    int         `json:"quantity"`
	Status      OrderStatus `json:"status"`
	CreatedAt   msTime      `json:"created_at"`
	FailureCode string      `json:"failure_code,omitempty"`
}

// MarshalJSON encodes the order of API.md: {order_id,user_id,drop_id,quantity,status,created_at}, the
// time in UTC with milliseconds, plus failure_code on a failed order. It is both the HTTP answer and the
// data of the order.confirmed event.
func (o Order) MarshalJSON() ([]byte, error) { return o.AppendJSON(make([]byte, 0, 160)), nil }

// AppendJSON appends what MarshalJSON writes, byte for byte what json.Marshal writes of orderJSON,
// without reflection (an order is encoded on every sale, twice).
func (o Order) AppendJSON(b []byte) []byte {
	b = append(b, `{"order_id":`...)
	b = jsonw.Int(b, o.ID)
	b = append(b, `,"user_id":`...)
	b = jsonw.Int(b, o.UserID)
	b = append(b, `,"drop_id":`...)
	b = jsonw.Int(b, o.DropID)
	b = append(b, `,"quantity":`...)
	b = jsonw.Int(b, int64(o.Quantity))
	b = append(b, `,"status":`...)
	b = jsonw.String(b, string(o.Status))
	b = append(b, `,"created_at":`...)
	b = jsonw.Time(b, o.CreatedAt, TimeFormat)
	if o.FailureCode != "" {
		b = append(b, `,"failure_code":`...)
		b = jsonw.String(b, o.FailureCode)
	}
	return append(b, '}')
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (o *Order) UnmarshalJSON(b []byte) error {
	var w orderJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*o = Order{ID: w.ID, UserID: w.UserID, DropID: w.DropID, Quantity: w.Quantity, Status: w.Status,
		CreatedAt: time.Time(w.CreatedAt), FailureCode: w.FailureCode}
	return nil
}

// PlaceOrder is one POST /orders: UserID (the caller) asks for Quantity units of DropID under
// IdempotencyKey.
type PlaceOrder struct {
	UserID         int64
	DropID         int64
	Quantity       int
	IdempotencyKey string
}

// Validate reports the first invalid field as a *FieldError.
func (p PlaceOrder) Validate() error {
	switch {
	case !ValidID(p.UserID):
		return Invalid("user_id", "must be a positive integer below 2^53")
	case !ValidID(p.DropID):
		return Invalid("drop_id", "must be a positive integer below 2^53")
	case p.Quantity < 1 || p.Quantity > MaxQuantity:
		return Invalid("quantity", "must be between 1 and %d", MaxQuantity)
	}
	return checkText("idempotency_key", p.IdempotencyKey, textRule{max: MaxIdempotencyKeyLen, required: true})
}

// Fingerprint is the SHA-256 of the canonical request, what an idempotency key is bound to: the drop
// and the quantity, in a fixed text form ("v1 drop_id=<id> quantity=<n>"). The user and the key are
// the row's identity, not part of it. The form is stored with every order, so it never changes; a new
// form would take a new version prefix.
func (p PlaceOrder) Fingerprint() [32]byte {
	b := make([]byte, 0, 64)
	b = append(b, "v1 drop_id="...)
	b = strconv.AppendInt(b, p.DropID, 10)
	b = append(b, " quantity="...)
	b = strconv.AppendInt(b, int64(p.Quantity), 10)
	return sha256.Sum256(b)
}

// Placed is the answer to a PlaceOrder: the order under the key, and whether it existed before this
// request (a replay, answered with `Idempotent-Replayed: true`).
type Placed struct {
	Order    Order
	Replayed bool
}
