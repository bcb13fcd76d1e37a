package redis

import (
	"context"
	"strconv"

	"github.com/livedrops/livedrops/store"
)

// The stores the cache wraps, as it uses them.
type (
	// CreatorStore stores creator profiles.
	CreatorStore interface {
		CreateCreator(ctx context.Context, userID int64, profileName string) (store.Creator, error)
		Creator(ctx context.Context, id int64) (store.Creator, error)
	}
	// FollowStore stores the follow graph.
	FollowStore interface {
		Follow(ctx context.Context, userID, creatorID int64) (bool, error)
		Unfollow(ctx context.Context, userID, creatorID int64) (bool, error)
		Followers(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Follower], error)
		Following(ctx context.Context, userID int64, req store.PageRequest) (store.Page[store.Following], error)
	}
	// ProductStore stores the catalogue.
	ProductStore interface {
		CreateProduct(ctx context.Context, creatorID int64, p store.NewProduct) (store.Product, error)
		Product(ctx context.Context, id int64) (store.Product, error)
		Products(ctx context.Context, page, perPage int) ([]store.Product, bool, error)
	}
	// DropStore stores drops.
	DropStore interface {
		CreateDrop(ctx context.Context, creatorID int64, d store.NewDrop) (store.Drop, error)
		Drop(ctx context.Context, id int64) (store.Drop, error)
		LiveDrops(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Drop], error)
	}
)

// Creators wraps next: profiles are cached for CreatorTTL; follows invalidate them (see Follows).
func (c *Cache) Creators(next CreatorStore) *CachedCreators { return &CachedCreators{c: c, next: next} }

// CachedCreators is a CreatorStore with a cache in front.
type CachedCreators struct {
	c    *Cache
	next CreatorStore
}

// CreateCreator creates in the store, then drops any cached answer for the id.
func (s *CachedCreators) CreateCreator(ctx context.Context, userID int64, profileName string) (store.Creator, error) {
	cr, err := s.next.CreateCreator(ctx, userID, profileName)
	if err != nil {
		return cr, err
	}
	_ = s.c.InvalidateCreator(ctx, userID)
	return cr, nil
}

// Creator reads through the cache.
func (s *CachedCreators) Creator(ctx context.Context, creatorID int64) (store.Creator, error) {
	return readThrough(ctx, s.c, cacheCreator, s.c.key("creator", id(creatorID)), s.c.cfg.CreatorTTL,
		func(ctx context.Context) (store.Creator, error) { return s.next.Creator(ctx, creatorID) })
}

// Follows wraps next: follower pages are cached per creator version; a follow or unfollow that changed
// something bumps the creator's version, drops its cached profile (the follower count) and gives the
// user's follow list (FollowLists, the hub's cache) a new version, after the commit. Following pages
// are not cached.
func (c *Cache) Follows(next FollowStore) *CachedFollows { return &CachedFollows{c: c, next: next} }

// CachedFollows is a FollowStore with a cache in front.
type CachedFollows struct {
	c    *Cache
	next FollowStore
}

// Follow follows in the store, then invalidates the creator when it changed.
func (s *CachedFollows) Follow(ctx context.Context, userID, creatorID int64) (bool, error) {
	changed, err := s.next.Follow(ctx, userID, creatorID)
	if err == nil && changed {
		_ = s.c.InvalidateCreator(ctx, creatorID)
		_ = s.c.InvalidateFollowing(ctx, userID)
	}
	return changed, err
}

// Unfollow unfollows in the store, then invalidates the creator when it changed.
func (s *CachedFollows) Unfollow(ctx context.Context, userID, creatorID int64) (bool, error) {
	changed, err := s.next.Unfollow(ctx, userID, creatorID)
	if err == nil && changed {
		_ = s.c.InvalidateCreator(ctx, creatorID)
		_ = s.c.InvalidateFollowing(ctx, userID)
	}
	return changed, err
}

// followerPage is a cached page of followers.
type followerPage struct {
	Items []store.Follower `json:"items"`
	Next  string           `json:"next,omitempty"`
}

// Followers reads the page through the cache, one key per (creator version, limit, cursor).
func (s *CachedFollows) Followers(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Follower], error) {
	// The version is read before the store is, so a page loaded across a change is stored under the
	// old version, which no reader asks for again.
	v, ok := s.c.version(ctx, cacheFollowers, s.c.key("followers", id(creatorID), "v"))
	if !ok {
		return s.next.Followers(ctx, creatorID, req)
	}
	after := "-"
	if req.After != nil {
		after = req.After.String()
	}
	key := s.c.key("followers", id(creatorID), strconv.FormatInt(v, 10), strconv.Itoa(req.Limit), after)
	p, err := readThrough(ctx, s.c, cacheFollowers, key, s.c.cfg.PageTTL, func(ctx context.Context) (followerPage, error) {
		page, err := s.next.Followers(ctx, creatorID, req)
		if err != nil {
			return followerPage{}, err
		}
		fp := followerPage{Items: page.Items}
		if page.Next != nil {
			fp.Next = page.Next.String()
		}
		return fp, nil
	})
	if err != nil {
		return store.Page[store.Follower]{}, err
	}
	out := store.Page[store.Follower]{Items: p.Items}
	if out.Items == nil {
		out.Items = []store.Follower{}
	}
	if p.Next != "" {
		next, err := store.ParseCursor(p.Next)
		if err != nil {
			return s.next.Followers(ctx, creatorID, req)
		}
		out.Next = &next
	}
	return out, nil
}

// Following is not cached.
func (s *CachedFollows) Following(ctx context.Context, userID int64, req store.PageRequest) (store.Page[store.Following], error) {
	return s.next.Following(ctx, userID, req)
}

// Products wraps next: a product is written through at creation and cached for ProductTTL (products
// never change); pages are cached under one version that each new product bumps.
func (c *Cache) Products(next ProductStore) *CachedProducts { return &CachedProducts{c: c, next: next} }

// CachedProducts is a ProductStore with a cache in front.
type CachedProducts struct {
	c    *Cache
	next ProductStore
}

// CreateProduct creates in the store, caches the product and moves the pages on.
func (s *CachedProducts) CreateProduct(ctx context.Context, creatorID int64, np store.NewProduct) (store.Product, error) {
	p, err := s.next.CreateProduct(ctx, creatorID, np)
	if err != nil {
		return p, err
	}
	s.c.set(ctx, cacheProduct, s.c.key("product", id(p.ID)), p, s.c.cfg.ProductTTL)
	_ = s.c.bump(ctx, cacheProducts, s.c.key("products", "v"))
	return p, nil
}

// Product reads through the cache.
func (s *CachedProducts) Product(ctx context.Context, productID int64) (store.Product, error) {
	return readThrough(ctx, s.c, cacheProduct, s.c.key("product", id(productID)), s.c.cfg.ProductTTL,
		func(ctx context.Context) (store.Product, error) { return s.next.Product(ctx, productID) })
}

type productPage struct {
	Items   []store.Product `json:"items"`
	HasMore bool            `json:"has_more"`
}

// Products reads the page through the cache.
func (s *CachedProducts) Products(ctx context.Context, page, perPage int) ([]store.Product, bool, error) {
	v, ok := s.c.version(ctx, cacheProducts, s.c.key("products", "v"))
	if !ok {
		return s.next.Products(ctx, page, perPage)
	}
	key := s.c.key("products", strconv.FormatInt(v, 10), strconv.Itoa(page), strconv.Itoa(perPage))
	p, err := readThrough(ctx, s.c, cacheProducts, key, s.c.cfg.PageTTL, func(ctx context.Context) (productPage, error) {
		items, more, err := s.next.Products(ctx, page, perPage)
		return productPage{items, more}, err
	})
	if p.Items == nil && err == nil {
		p.Items = []store.Product{}
	}
	return p.Items, p.HasMore, err
}

// Drops wraps next: a drop is cached for at most DropTTL (its stock changes with every order; orders
// call InvalidateDrop after they commit). Live lists are not cached.
func (c *Cache) Drops(next DropStore) *CachedDrops { return &CachedDrops{c: c, next: next} }

// CachedDrops is a DropStore with a cache in front.
type CachedDrops struct {
	c    *Cache
	next DropStore
}

// CreateDrop creates in the store and caches the new drop.
func (s *CachedDrops) CreateDrop(ctx context.Context, creatorID int64, nd store.NewDrop) (store.Drop, error) {
	d, err := s.next.CreateDrop(ctx, creatorID, nd)
	if err != nil {
		return d, err
	}
	s.c.set(ctx, cacheDrop, s.c.key("drop", id(d.ID)), d, s.c.cfg.DropTTL)
	return d, nil
}

// Drop reads through the cache. The status stored is the one derived when the value was loaded;
// readers derive it again at their clock (store.Drop.At).
func (s *CachedDrops) Drop(ctx context.Context, dropID int64) (store.Drop, error) {
	return readThrough(ctx, s.c, cacheDrop, s.c.key("drop", id(dropID)), s.c.cfg.DropTTL,
		func(ctx context.Context) (store.Drop, error) { return s.next.Drop(ctx, dropID) })
}

// LiveDrops is not cached.
func (s *CachedDrops) LiveDrops(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Drop], error) {
	return s.next.LiveDrops(ctx, creatorID, req)
}
