package api

import (
	"net/http"
	"strconv"

	"github.com/livedrops/livedrops/store"
)

type createUserRequest struct {
	Name  *string `json:"name"`
	Email *string `json:"email"`
}

type createUserResponse struct {
	UserID int64  `json:"user_id"`
	Name   string `json:"name"`
	Email  string `json:"email"`
	Token  string `json:"token"`
}

// publicUser is what anyone may read of a user.
type publicUser struct {
	UserID int64  `json:"user_id"`
	Name   string `json:"name"`
}

// parseCreateUser decodes and checks the body of POST /users.
func parseCreateUser(body []byte) (store.NewUser, error) {
	var req createUserRequest
	if err := decodeJSON(body, &req); err != nil {
		return store.NewUser{}, err
	}
	var u store.NewUser
	var err error
	if u.Name, err = required("name", req.Name); err != nil {
		return u, err
	}
	if u.Email, err = required("email", req.Email); err != nil {
		return u, err
	}
	return u, u.Validate()
}

// POST /users: anyone; 201 with a token for the new user.
func (a *API) createUser(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	nu, err := parseCreateUser(body)
	if err != nil {
		return err
	}
	u, err := a.cfg.Users.CreateUser(r.Context(), nu)
	if err != nil {
		return err
	}
	token, err := a.cfg.Tokens.Mint(u.ID, a.cfg.TokenTTL)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/users/"+strconv.FormatInt(u.ID, 10))
	return writeJSON(w, http.StatusCreated, createUserResponse{u.ID, u.Name, u.Email, token})
}

// GET /users/{id}
func (a *API) getUser(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	u, err := a.cfg.Users.User(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, publicUser{u.ID, u.Name})
}

type createCreatorRequest struct {
	ProfileName *string `json:"profile_name"`
}

// parseCreateCreator decodes and checks the body of POST /creators.
func parseCreateCreator(body []byte) (string, error) {
	var req createCreatorRequest
	if err := decodeJSON(body, &req); err != nil {
		return "", err
	}
	name, err := required("profile_name", req.ProfileName)
	if err != nil {
		return "", err
	}
	return name, store.ValidateProfileName(name)
}

// POST /creators: the caller becomes a creator.
func (a *API) createCreator(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	name, err := parseCreateCreator(body)
	if err != nil {
		return err
	}
	c, err := a.cfg.Creators.CreateCreator(r.Context(), caller(r), name)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/creators/"+strconv.FormatInt(c.ID, 10))
	return writeJSON(w, http.StatusCreated, c)
}

// GET /creators/{id}
func (a *API) getCreator(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	c, err := a.cfg.Creators.Creator(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, c)
}

// followIDs reads and authorises the ids of POST and DELETE /users/{id}/follow/{creatorId}.
func followIDs(r *http.Request) (userID, creatorID int64, err error) {
	if userID, err = pathID(r, "id"); err != nil {
		return 0, 0, err
	}
	if creatorID, err = pathID(r, "creatorId"); err != nil {
		return 0, 0, err
	}
	return userID, creatorID, actAs(r, userID)
}

// POST /users/{id}/follow/{creatorId}: 204, also when already following.
func (a *API) follow(w http.ResponseWriter, r *http.Request) error {
	userID, creatorID, err := followIDs(r)
	if err != nil {
		return err
	}
	if _, err := a.cfg.Follows.Follow(r.Context(), userID, creatorID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// DELETE /users/{id}/follow/{creatorId}: 204, also when not following.
func (a *API) unfollow(w http.ResponseWriter, r *http.Request) error {
	userID, creatorID, err := followIDs(r)
	if err != nil {
		return err
	}
	if _, err := a.cfg.Follows.Unfollow(r.Context(), userID, creatorID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// GET /creators/{id}/followers?limit=&cursor=
func (a *API) listFollowers(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	req, err := pageRequest(r)
	if err != nil {
		return err
	}
	page, err := a.cfg.Follows.Followers(r.Context(), id, req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOf(page))
}

// GET /users/{id}/following?limit=&cursor=
func (a *API) listFollowing(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	req, err := pageRequest(r)
	if err != nil {
		return err
	}
	page, err := a.cfg.Follows.Following(r.Context(), id, req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOf(page))
}
