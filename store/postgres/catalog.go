package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livedrops/livedrops/fanout"
	"github.com/livedrops/livedrops/store"
)

// Catalog stores products and drops. Creating a drop writes its drop.scheduled event to the outbox in
// the same transaction.
type Catalog struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// NewCatalog returns the catalogue store on pool; now is the clock that validates start times, derives
// drop statuses and stamps events (nil: time.Now).
func NewCatalog(pool *pgxpool.Pool, now func() time.Time) *Catalog {
	if now == nil {
		now = time.Now
	}
	return &Catalog{pool: pool, now: now}
}

// CreateProduct adds a product of creatorID. A caller who is not a creator is store.ErrForbidden;
// invalid input is a *store.FieldError.
func (s *Catalog) CreateProduct(ctx context.Context, creatorID int64, p store.NewProduct) (store.Product, error) {
	if err := p.Validate(); err != nil {
		return store.Product{}, err
	}
	out := store.Product{CreatorID: creatorID, Title: p.Title, Description: p.Description, PriceCents: p.PriceCents}
	err := s.pool.QueryRow(ctx, `INSERT INTO products (creator_id, title, description, price_cents)
VALUES ($1, $2, $3, $4) RETURNING product_id`, creatorID, p.Title, p.Description, p.PriceCents).Scan(&out.ID)
	if constraint(err) == ConstraintProductCreator {
		return store.Product{}, fmt.Errorf("create product: user %d is not a creator (POST /creators first): %w", creatorID, store.ErrForbidden)
	}
	if err != nil {
		return store.Product{}, fmt.Errorf("create product: %w", mapCheck(err))
	}
	return out, nil
}

// Product returns product id, or store.ErrNotFound.
func (s *Catalog) Product(ctx context.Context, id int64) (store.Product, error) {
	p := store.Product{ID: id}
	err := s.pool.QueryRow(ctx, `SELECT creator_id, title, description, price_cents FROM products WHERE product_id = $1`, id).
		Scan(&p.CreatorID, &p.Title, &p.Description, &p.PriceCents)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Product{}, fmt.Errorf("product %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Product{}, fmt.Errorf("product %d: %w", id, err)
	}
	return p, nil
}

// MaxProductPage bounds page × per_page of Products: OFFSET paging reads every skipped row.
const MaxProductPage = 100_000

// Products returns page (1-based) of all products by id, perPage at a time (default 20, at most 100),
// and whether another page follows.
func (s *Catalog) Products(ctx context.Context, page, perPage int) (items []store.Product, hasMore bool, err error) {
	perPage = pageLimit(perPage)
	if page < 1 || page > MaxProductPage {
		return nil, false, store.Invalid("page", "must be between 1 and %d", MaxProductPage)
	}
	rows, err := s.pool.Query(ctx, `SELECT product_id, creator_id, title, description, price_cents FROM products
ORDER BY product_id LIMIT $1 OFFSET $2`, perPage+1, (page-1)*perPage)
	if err != nil {
		return nil, false, fmt.Errorf("products page %d: %w", page, err)
	}
	items, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Product, error) {
		var p store.Product
		err := row.Scan(&p.ID, &p.CreatorID, &p.Title, &p.Description, &p.PriceCents)
		return p, err
	})
	if err != nil {
		return nil, false, fmt.Errorf("products page %d: %w", page, err)
	}
	if len(items) > perPage {
		return items[:perPage], true, nil
	}
	if items == nil {
		items = []store.Product{}
	}
	return items, false, nil
}

// CreateDrop schedules a drop of one of creatorID's products and writes its drop.scheduled event in the
// same transaction. An unknown product is store.ErrNotFound, another creator's store.ErrForbidden,
// invalid input a *store.FieldError.
func (s *Catalog) CreateDrop(ctx context.Context, creatorID int64, nd store.NewDrop) (store.Drop, error) {
	now := s.now()
	if err := nd.Validate(now); err != nil {
		return store.Drop{}, err
	}
	d := store.Drop{CreatorID: creatorID, StartTime: nd.StartTime.UTC().Truncate(time.Millisecond),
		EndTime: nd.EndTime.UTC().Truncate(time.Millisecond), InitialStock: int(nd.StockCount),
		StockCount: int(nd.StockCount), MaxPerUser: int(nd.MaxPerUser)}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var owner int64
		d.Product.ID = nd.ProductID
		err := tx.QueryRow(ctx, `SELECT creator_id, title, price_cents FROM products WHERE product_id = $1 FOR KEY SHARE`,
			nd.ProductID).Scan(&owner, &d.Product.Title, &d.Product.PriceCents)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("product %d: %w", nd.ProductID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if owner != creatorID {
			return fmt.Errorf("product %d belongs to another creator: %w", nd.ProductID, store.ErrForbidden)
		}
		err = tx.QueryRow(ctx, `INSERT INTO drops (creator_id, product_id, start_time, end_time, initial_stock, stock_count, max_per_user)
VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING drop_id, status`,
			creatorID, nd.ProductID, d.StartTime, d.EndTime, d.InitialStock, d.MaxPerUser).Scan(&d.ID, &d.Status)
		if err != nil {
			return mapCheck(err)
		}
		d = d.At(now)
		data, err := json.Marshal(d)
		if err != nil {
			return err
		}
		return InsertEvents(ctx, tx, fanout.Event{Type: fanout.DropScheduled, TS: now, CreatorID: creatorID,
			DropID: d.ID, Data: data})
	})
	if err != nil {
		return store.Drop{}, fmt.Errorf("create drop: %w", err)
	}
	return d, nil
}

const dropColumns = `SELECT d.drop_id, d.creator_id, d.product_id, p.title, p.price_cents, d.start_time, d.end_time,
       d.initial_stock, d.stock_count, d.max_per_user, d.status
FROM drops d JOIN products p ON p.product_id = d.product_id`

func scanDrop(row pgx.Row) (store.Drop, error) {
	var d store.Drop
	err := row.Scan(&d.ID, &d.CreatorID, &d.Product.ID, &d.Product.Title, &d.Product.PriceCents, &d.StartTime,
		&d.EndTime, &d.InitialStock, &d.StockCount, &d.MaxPerUser, &d.Status)
	d.StartTime, d.EndTime = d.StartTime.UTC(), d.EndTime.UTC()
	return d, err
}

// Drop returns drop id with its status derived at the store's clock (store.Drop.At), or
// store.ErrNotFound.
func (s *Catalog) Drop(ctx context.Context, id int64) (store.Drop, error) {
	d, err := scanDrop(s.pool.QueryRow(ctx, dropColumns+` WHERE d.drop_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Drop{}, fmt.Errorf("drop %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Drop{}, fmt.Errorf("drop %d: %w", id, err)
	}
	return d.At(s.now()), nil
}

// LiveDrops returns a page of the drops live now, by drop id: started (whether or not the scheduler
// has flipped them yet), not ended and not sold out; only creatorID's when it is not 0. The cursor's
// ID is the last drop id seen.
func (s *Catalog) LiveDrops(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Drop], error) {
	limit := pageLimit(req.Limit)
	var after int64
	if req.After != nil {
		after = req.After.ID
	}
	now := s.now()
	rows, err := s.pool.Query(ctx, dropColumns+`
WHERE d.status IN ('scheduled', 'live') AND d.start_time <= $1 AND d.end_time > $1 AND d.stock_count > 0
  AND ($2 = 0 OR d.creator_id = $2) AND d.drop_id > $3
ORDER BY d.drop_id LIMIT $4`, now, creatorID, after, limit+1)
	if err != nil {
		return store.Page[store.Drop]{}, fmt.Errorf("live drops: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Drop, error) {
		d, err := scanDrop(row)
		return d.At(now), err
	})
	if err != nil {
		return store.Page[store.Drop]{}, fmt.Errorf("live drops: %w", err)
	}
	return cut(items, limit, dropPosition), nil
}

// dropPosition is a drop's place in a list by id; the time part is the epoch.
func dropPosition(d store.Drop) store.Cursor {
	return store.Cursor{At: time.UnixMilli(0).UTC(), ID: d.ID}
}
