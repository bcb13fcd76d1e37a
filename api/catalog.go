package api

import (
	"net/http"
	"strconv"

	"github.com/livedrops/livedrops/store"
)

type createProductRequest struct {
	Title       *string `json:"title"`
	Description *string `json:"description"`
	PriceCents  *int64  `json:"price_cents"`
}

// parseCreateProduct decodes and checks the body of POST /products (description may be left out).
func parseCreateProduct(body []byte) (store.NewProduct, error) {
	var req createProductRequest
	if err := decodeJSON(body, &req); err != nil {
		return store.NewProduct{}, err
	}
	var p store.NewProduct
	var err error
	if p.Title, err = required("title", req.Title); err != nil {
		return p, err
	}
	if req.Description != nil {
		p.Description = *req.Description
	}
	if p.PriceCents, err = required("price_cents", req.PriceCents); err != nil {
		return p, err
	}
	return p, p.Validate()
}

// POST /products: a creator adds a product.
func (a *API) createProduct(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	np, err := parseCreateProduct(body)
	if err != nil {
		return err
	}
	p, err := a.cfg.Products.CreateProduct(r.Context(), caller(r), np)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/products/"+strconv.FormatInt(p.ID, 10))
	return writeJSON(w, http.StatusCreated, p)
}

type productPage struct {
	Items   []store.Product `json:"items"`
	Page    int             `json:"page"`
	PerPage int             `json:"per_page"`
	HasMore bool            `json:"has_more"`
}

// GET /products?page=&per_page=
func (a *API) listProducts(w http.ResponseWriter, r *http.Request) error {
	page, err := queryInt(r, "page", 1, 1, maxProductPage)
	if err != nil {
		return err
	}
	perPage, err := queryInt(r, "per_page", store.DefaultLimit, 1, store.MaxLimit)
	if err != nil {
		return err
	}
	items, more, err := a.cfg.Products.Products(r.Context(), page, perPage)
	if err != nil {
		return err
	}
	if items == nil {
		items = []store.Product{}
	}
	return writeJSON(w, http.StatusOK, productPage{items, page, perPage, more})
}

// maxProductPage is the deepest page of GET /products (offset paging reads every skipped row).
const maxProductPage = 100_000

// GET /products/{id}
func (a *API) getProduct(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	p, err := a.cfg.Products.Product(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

type createDropRequest struct {
	ProductID  *int64  `json:"product_id"`
	StartTime  *string `json:"start_time"`
	EndTime    *string `json:"end_time"`
	StockCount *int64  `json:"stock_count"`
	MaxPerUser *int64  `json:"max_per_user"`
}

// parseCreateDrop decodes the body of POST /drops and checks its shape; the rules that need the
// clock (start in the past) are the store's.
func parseCreateDrop(body []byte) (store.NewDrop, error) {
	var req createDropRequest
	if err := decodeJSON(body, &req); err != nil {
		return store.NewDrop{}, err
	}
	var d store.NewDrop
	var err error
	if d.ProductID, err = required("product_id", req.ProductID); err != nil {
		return d, err
	}
	start, err := required("start_time", req.StartTime)
	if err != nil {
		return d, err
	}
	if d.StartTime, err = parseTime("start_time", start); err != nil {
		return d, err
	}
	end, err := required("end_time", req.EndTime)
	if err != nil {
		return d, err
	}
	if d.EndTime, err = parseTime("end_time", end); err != nil {
		return d, err
	}
	if d.StockCount, err = required("stock_count", req.StockCount); err != nil {
		return d, err
	}
	if d.MaxPerUser, err = required("max_per_user", req.MaxPerUser); err != nil {
		return d, err
	}
	return d, nil
}

// POST /drops: the product's creator schedules a drop.
func (a *API) createDrop(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	nd, err := parseCreateDrop(body)
	if err != nil {
		return err
	}
	if err := nd.Validate(a.now()); err != nil {
		return err
	}
	d, err := a.cfg.Drops.CreateDrop(r.Context(), caller(r), nd)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/drops/"+strconv.FormatInt(d.ID, 10))
	return writeJSON(w, http.StatusCreated, d.At(a.now()))
}

// GET /drops/{id}: the status is derived now, so a cached drop still reads live at its start.
func (a *API) getDrop(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	d, err := a.cfg.Drops.Drop(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d.At(a.now()))
}

// GET /drops/live?creator_id=&limit=&cursor=
func (a *API) listLiveDrops(w http.ResponseWriter, r *http.Request) error {
	var creatorID int64
	if s := r.URL.Query().Get("creator_id"); s != "" {
		var err error
		if creatorID, err = parseID("creator_id", s); err != nil {
			return err
		}
	}
	req, err := pageRequest(r)
	if err != nil {
		return err
	}
	page, err := a.cfg.Drops.LiveDrops(r.Context(), creatorID, req)
	if err != nil {
		return err
	}
	now := a.now()
	for i, d := range page.Items {
		page.Items[i] = d.At(now)
	}
	return writeJSON(w, http.StatusOK, listOf(page))
}
