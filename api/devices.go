package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/livedrops/livedrops/store"
)

// Devices stores push devices (store/postgres.Devices).
type Devices interface {
	// RegisterDevice records d for userID and reports whether it is new to the user.
	RegisterDevice(ctx context.Context, userID int64, d store.NewDevice) (store.Device, bool, error)
	UserDevices(ctx context.Context, userID int64) ([]store.Device, error)
	DeleteDevice(ctx context.Context, userID, deviceID int64) (bool, error)
}

// deviceRoutes mounts the device routes and GET /push/config on r. Registering and deleting are writes
// (address limit, authentication, user limit); the list needs authentication; the push configuration
// is public (the page reads it before anyone signs in).
func (a *API) deviceRoutes(r chi.Router) {
	r.Get("/push/config", a.handle(a.pushConfig))
	if a.cfg.Devices == nil {
		return
	}
	r.With(a.limitIP, a.authenticate, a.limitUser).Post("/users/{id}/devices", a.handle(a.registerDevice))
	r.With(a.limitIP, a.authenticate, a.limitUser).Delete("/users/{id}/devices/{deviceId}", a.handle(a.deleteDevice))
	r.With(a.authenticate).Get("/users/{id}/devices", a.handle(a.listDevices))
}

type pushConfigResponse struct {
	WebPush webPushConfig `json:"webpush"`
}

type webPushConfig struct {
	Enabled        bool   `json:"enabled"`
	VAPIDPublicKey string `json:"vapid_public_key,omitempty"`
}

// GET /push/config: what a browser needs to subscribe (the VAPID public key, the applicationServerKey
// of PushManager.subscribe), or enabled false when the server sends no Web Push.
func (a *API) pushConfig(w http.ResponseWriter, _ *http.Request) error {
	c := webPushConfig{Enabled: a.cfg.VAPIDPublicKey != "", VAPIDPublicKey: a.cfg.VAPIDPublicKey}
	w.Header().Set("Cache-Control", "public, max-age=300")
	return writeJSON(w, http.StatusOK, pushConfigResponse{c})
}

type newDeviceRequest struct {
	Platform     *string              `json:"platform"`
	Token        *string              `json:"token"`
	Subscription *subscriptionRequest `json:"subscription"`
}

// subscriptionRequest is a PushSubscription as the browser's toJSON() writes it.
type subscriptionRequest struct {
	Endpoint *string `json:"endpoint"`
	// ExpirationTime is part of PushSubscription.toJSON() (null, or a time in ms); accepted and unused:
	// an expired subscription answers 404/410 and is removed then.
	ExpirationTime json.RawMessage `json:"expirationTime"`
	Keys           *struct {
		P256dh *string `json:"p256dh"`
		Auth   *string `json:"auth"`
	} `json:"keys"`
}

// parseNewDevice decodes and checks the body of POST /users/{id}/devices.
func parseNewDevice(body []byte, endpoints store.EndpointPolicy) (store.NewDevice, error) {
	var req newDeviceRequest
	if err := decodeJSON(body, &req); err != nil {
		return store.NewDevice{}, err
	}
	platform, err := required("platform", req.Platform)
	if err != nil {
		return store.NewDevice{}, err
	}
	d := store.NewDevice{Platform: store.Platform(platform)}
	switch d.Platform {
	case store.PlatformFCM:
		if req.Subscription != nil {
			return d, store.Invalid("subscription", "is for platform webpush; an fcm device sends token")
		}
		if d.Token, err = required("token", req.Token); err != nil {
			return d, err
		}
	case store.PlatformWebPush:
		if req.Token != nil {
			return d, store.Invalid("token", "is for platform fcm; a webpush device sends subscription")
		}
		sub := req.Subscription
		if sub == nil {
			return d, store.Invalid("subscription", "is required: the browser's PushSubscription {endpoint, keys}")
		}
		if d.Token, err = required("subscription.endpoint", sub.Endpoint); err != nil {
			return d, err
		}
		if sub.Keys == nil {
			return d, store.Invalid("subscription.keys", "is required: {p256dh, auth}")
		}
		if d.Keys.P256dh, err = required("subscription.keys.p256dh", sub.Keys.P256dh); err != nil {
			return d, err
		}
		if d.Keys.Auth, err = required("subscription.keys.auth", sub.Keys.Auth); err != nil {
			return d, err
		}
		if et := sub.ExpirationTime; et != nil && string(et) != "null" {
			var ms float64
			if json.Unmarshal(et, &ms) != nil {
				return d, store.Invalid("subscription.expirationTime", "want null or a time in milliseconds")
			}
		}
	}
	return d.Validate(endpoints)
}

// POST /users/{id}/devices: 201 with the device, 200 with the same body when the token or endpoint is
// already this user's.
func (a *API) registerDevice(w http.ResponseWriter, r *http.Request) error {
	userID, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := actAs(r, userID); err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	d, err := parseNewDevice(body, a.endpoints)
	if err != nil {
		return err
	}
	dev, created, err := a.cfg.Devices.RegisterDevice(r.Context(), userID, d)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, dev)
}

// GET /users/{id}/devices: the user's own devices.
func (a *API) listDevices(w http.ResponseWriter, r *http.Request) error {
	userID, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := actAs(r, userID); err != nil {
		return err
	}
	devs, err := a.cfg.Devices.UserDevices(r.Context(), userID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOf(store.Page[store.Device]{Items: devs}))
}

// DELETE /users/{id}/devices/{deviceId}: 204, also when there was no such device.
func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	userID, err := pathID(r, "id")
	if err != nil {
		return err
	}
	deviceID, err := pathID(r, "deviceId")
	if err != nil {
		return err
	}
	if err := actAs(r, userID); err != nil {
		return err
	}
	if _, err := a.cfg.Devices.DeleteDevice(r.Context(), userID, deviceID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
