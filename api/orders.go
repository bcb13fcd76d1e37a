package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/store"
)

// Orders places and reads orders (store/postgres.Orders). PlaceOrder answers only after the order's
// commit, so a nil error means the order is durable.
type Orders interface {
	PlaceOrder(ctx context.Context, req store.PlaceOrder) (store.Placed, error)
	Order(ctx context.Context, userID, orderID int64) (store.Order, error)
	UserOrders(ctx context.Context, userID int64, req store.PageRequest) (store.Page[store.Order], error)
}

// Headers of idempotent writes (draft-ietf-httpapi-idempotency-key-header).
const (
	IdempotencyKeyHeader = "Idempotency-Key"
	ReplayedHeader       = "Idempotent-Replayed"
)

// orderRoutes mounts the order routes on r: placing an order is a write (address limit,
// authentication, user limit); reading needs authentication only.
func (a *API) orderRoutes(r chi.Router) {
	r.With(a.limitIP, a.authenticate, a.limitUser).Post("/orders", a.handle(a.placeOrder))
	r.With(a.authenticate).Get("/orders/{id}", a.handle(a.getOrder))
	r.With(a.authenticate).Get("/users/{id}/orders", a.handle(a.listUserOrders))
}

type placeOrderRequest struct {
	DropID         *int64  `json:"drop_id"`
	Quantity       *int64  `json:"quantity"`
	IdempotencyKey *string `json:"idempotency_key"`
}

// parsePlaceOrder decodes and checks the body of POST /orders with the values of its Idempotency-Key
// header. The key comes from the body or the header; both is fine when they agree. The result has
// no UserID yet: that is the caller's.
func parsePlaceOrder(body []byte, keyHeader []string) (store.PlaceOrder, error) {
	req, ok := parseOrderBodyFast(body)
	if !ok {
		req = placeOrderRequest{}
		if err := decodeJSON(body, &req); err != nil {
			return store.PlaceOrder{}, err
		}
	}
	var p store.PlaceOrder
	var err error
	if p.DropID, err = required("drop_id", req.DropID); err != nil {
		return p, err
	}
	if !store.ValidID(p.DropID) {
		return p, store.Invalid("drop_id", "must be a positive integer below 2^53")
	}
	quantity, err := required("quantity", req.Quantity)
	if err != nil {
		return p, err
	}
	if quantity < 1 || quantity > store.MaxQuantity {
		return p, store.Invalid("quantity", "must be between 1 and %d", store.MaxQuantity)
	}
	p.Quantity = int(quantity)
	headerKey, inHeader, err := parseKeyHeader(keyHeader)
	if err != nil {
		return p, err
	}
	switch {
	case req.IdempotencyKey != nil && inHeader && *req.IdempotencyKey != headerKey:
		return p, store.Invalid("idempotency_key", "differs from the %s header; send one key", IdempotencyKeyHeader)
	case req.IdempotencyKey != nil:
		p.IdempotencyKey = *req.IdempotencyKey
	case inHeader:
		p.IdempotencyKey = headerKey
	default:
		return p, store.Invalid("idempotency_key", "is required, in the body or as the %s header", IdempotencyKeyHeader)
	}
	// The user is checked by the store; a placeholder lets the rest be validated here.
	check := p
	check.UserID = 1
	return p, check.Validate()
}

// parseKeyHeader reads the Idempotency-Key header: absent is ok = false; one value is the key, written
// plainly or as an RFC 8941 string ("..." with \" and \\ escapes); more than one is refused.
func parseKeyHeader(values []string) (key string, ok bool, err error) {
	switch len(values) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, store.Invalid("idempotency_key", "the %s header is given %d times; send it once", IdempotencyKeyHeader, len(values))
	}
	v := values[0]
	if !strings.HasPrefix(v, `"`) {
		return v, true, nil
	}
	bad := store.Invalid("idempotency_key", "the %s header is not a valid quoted string", IdempotencyKeyHeader)
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\':
			if i+1 >= len(v) || (v[i+1] != '"' && v[i+1] != '\\') {
				return "", false, bad
			}
			i++
			b.WriteByte(v[i])
		case c == '"':
			if i != len(v)-1 {
				return "", false, bad
			}
			return b.String(), true, nil
		case c < 0x20 || c > 0x7e:
			return "", false, bad
		default:
			b.WriteByte(c)
		}
	}
	return "", false, bad // no closing quote
}

// POST /orders: the caller buys units of a live drop: 201 with the order once it has committed. A
// replay answers the same with Idempotent-Replayed: true; a stored order still pending is 202.
func (a *API) placeOrder(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	req, err := parsePlaceOrder(body, r.Header.Values(IdempotencyKeyHeader))
	if err != nil {
		return err
	}
	req.UserID = caller(r)
	placed, err := a.cfg.Orders.PlaceOrder(r.Context(), req)
	if err != nil {
		return err
	}
	ord := placed.Order
	if placed.Replayed {
		w.Header().Set(ReplayedHeader, "true")
	}
	switch ord.Status {
	case store.OrderFailed:
		// A stored failure is answered as what it was.
		return &requestError{code: ord.FailureCode, detail: "order " + strconv.FormatInt(ord.ID, 10) + " under this key failed: " + ord.FailureCode}
	case store.OrderPending:
		w.Header().Set("Location", "/orders/"+strconv.FormatInt(ord.ID, 10))
		return writeJSON(w, http.StatusAccepted, ord)
	}
	w.Header().Set("Location", "/orders/"+strconv.FormatInt(ord.ID, 10))
	return writeJSON(w, http.StatusCreated, ord)
}

// GET /orders/{id}: the buyer only; anyone else's order is 404, like a missing one.
func (a *API) getOrder(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	ord, err := a.cfg.Orders.Order(r.Context(), caller(r), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, ord)
}

// GET /users/{id}/orders?limit=&cursor=: the user only (else 403), newest first.
func (a *API) listUserOrders(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := actAs(r, id); err != nil {
		return err
	}
	req, err := pageRequest(r)
	if err != nil {
		return err
	}
	page, err := a.cfg.Orders.UserOrders(r.Context(), id, req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOf(page))
}
