package api

import (
	"context"
	"net/http"

	"github.com/livedrops/livedrops/store"
)

// Directory lists what a visitor browses: the creators, and a creator's drops of every status.
type Directory interface {
	Creators(ctx context.Context, req store.PageRequest) (store.Page[store.Creator], error)
	CreatorDrops(ctx context.Context, creatorID int64, req store.PageRequest) (store.Page[store.Drop], error)
}

// GET /creators?limit=&cursor=: creators, newest first.
func (a *API) listCreators(w http.ResponseWriter, r *http.Request) error {
	req, err := pageRequest(r)
	if err != nil {
		return err
	}
	page, err := a.cfg.Directory.Creators(r.Context(), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOf(page))
}

// GET /creators/{id}/drops?limit=&cursor=: the creator's drops, newest first, statuses derived now.
func (a *API) listCreatorDrops(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	req, err := pageRequest(r)
	if err != nil {
		return err
	}
	page, err := a.cfg.Directory.CreatorDrops(r.Context(), id, req)
	if err != nil {
		return err
	}
	now := a.now()
	for i, d := range page.Items {
		page.Items[i] = d.At(now)
	}
	return writeJSON(w, http.StatusOK, listOf(page))
}
