package store

import (
	"encoding/json"
	"math"
	"time"
)

// Product is an item a creator sells.
type Product struct {
	ID          int64  `json:"product_id"`
	CreatorID   int64  `json:"creator_id"`
	Title       string `json:"title"`
	Description string `json:"description"`
	PriceCents  int64  `json:"price_cents"`
}

// NewProduct is what POST /products asks for.
type NewProduct struct {
	Title       string
	Description string
	PriceCents  int64
}

// Validate reports the first invalid field as a *FieldError.
func (p NewProduct) Validate() error {
	if err := checkText("title", p.Title, textRule{max: MaxTitleLen, required: true}); err != nil {
		return err
	}
	if err := checkText("description", p.Description, textRule{max: MaxDescriptionLen, multiline: true}); err != nil {
		return err
	}
	if p.PriceCents < 0 || p.PriceCents > MaxID {
		return Invalid("price_cents", "must be between 0 and %d", int64(MaxID))
	}
	return nil
}

// DropStatus is where a drop is in its life: scheduled → live → (sold_out →) ended.
type DropStatus string

// The drop statuses of the API.
const (
	DropScheduled DropStatus = "scheduled"
	DropLive      DropStatus = "live"
	DropSoldOut   DropStatus = "sold_out"
	DropEnded     DropStatus = "ended"
)

// DropProduct is the part of a product a drop shows.
type DropProduct struct {
	ID         int64  `json:"product_id"`
	Title      string `json:"title"`
	PriceCents int64  `json:"price_cents"`
}

// Drop sells InitialStock units of a product between StartTime and EndTime; StockCount is what
// remains.
type Drop struct {
	ID           int64
	CreatorID    int64
	Product      DropProduct
	StartTime    time.Time
	EndTime      time.Time
	InitialStock int
	StockCount   int
	MaxPerUser   int
	// Status is the stored status, or the derived one after At.
	Status DropStatus
}

// At returns d with Status as it stands at now, consistent with the clock and the stock even before
// the scheduler has flipped the stored status: past EndTime a drop is ended; before that, without
// stock it is sold out; past StartTime it is live; else scheduled. Deriving twice is harmless.
func (d Drop) At(now time.Time) Drop {
	switch {
	case d.Status == DropEnded || !now.Before(d.EndTime):
		d.Status = DropEnded
	case d.Status == DropSoldOut || d.StockCount <= 0:
		d.Status = DropSoldOut
	case d.Status == DropLive || !now.Before(d.StartTime):
		d.Status = DropLive
	default:
		d.Status = DropScheduled
	}
	return d
}

type dropJSON struct {
	ID           int64       `json:"drop_id"`
	CreatorID    int64       `json:"creator_id"`
	Product      DropProduct `json:"product"`
	StartTime    msTime      `json:"start_time"`
	EndTime      msTime      `json:"end_time"`
	InitialStock int         `json:"initial_stock"`
	StockCount   int         `json:"stock_count"`
	MaxPerUser   int         `json:"max_per_user"`
	Status       DropStatus  `json:"status"`
}

// MarshalJSON encodes the drop of API.md:
// {drop_id,creator_id,product:{product_id,title,price_cents},start_time,end_time,initial_stock,
// stock_count,max_per_user,status}, times in UTC with milliseconds. It is also the data of the
// drop.scheduled and drop.started events.
func (d Drop) MarshalJSON() ([]byte, error) {
	return json.Marshal(dropJSON{d.ID, d.CreatorID, d.Product, msTime(d.StartTime), msTime(d.EndTime),
		d.InitialStock, d.StockCount, d.MaxPerUser, d.Status})
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (d *Drop) UnmarshalJSON(b []byte) error {
	var w dropJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*d = Drop{ID: w.ID, CreatorID: w.CreatorID, Product: w.Product, StartTime: time.Time(w.StartTime),
		EndTime: time.Time(w.EndTime), InitialStock: w.InitialStock, StockCount: w.StockCount,
		MaxPerUser: w.MaxPerUser, Status: w.Status}
	return nil
}

// StartGrace is how far in the past a new drop's start_time may lie, to absorb the clock difference
// between a client and the server; a start further back is refused.
const StartGrace = 5 * time.Second

// NewDrop is what POST /drops asks for.
type NewDrop struct {
	ProductID  int64
	StartTime  time.Time
	EndTime    time.Time
	StockCount int64
	MaxPerUser int64
}

// Validate reports the first invalid field as a *FieldError; now is the server's clock.
func (d NewDrop) Validate(now time.Time) error {
	switch {
	case !ValidID(d.ProductID):
		return Invalid("product_id", "must be a positive integer below 2^53")
	case d.StartTime.Before(now.Add(-StartGrace)):
		return Invalid("start_time", "is in the past")
	case d.StartTime.Year() > 9999:
		return Invalid("start_time", "is too far in the future")
	case !d.EndTime.After(d.StartTime):
		return Invalid("end_time", "must be after start_time")
	case d.EndTime.Year() > 9999:
		return Invalid("end_time", "is too far in the future")
	case d.StockCount < 1 || d.StockCount > math.MaxInt32:
		return Invalid("stock_count", "must be between 1 and %d", math.MaxInt32)
	case d.MaxPerUser < 1 || d.MaxPerUser > math.MaxInt32:
		return Invalid("max_per_user", "must be between 1 and %d", math.MaxInt32)
	}
	return nil
}
