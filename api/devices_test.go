package api_test

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/livedrops/livedrops/api"
	"github.com/livedrops/livedrops/store"
)

// subscriptionKeys returns a real P-256 public key and a 16-byte secret, base64url, as a browser makes.
func subscriptionKeys(tb testing.TB) (p256dh, auth string) {
	tb.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	return base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()), base64.RawURLEncoding.EncodeToString(secret)
}

func webpushBody(endpoint, p256dh, auth string) map[string]any {
	return map[string]any{"platform": "webpush", "subscription": map[string]any{
		"endpoint": endpoint, "expirationTime": nil, "keys": map[string]string{"p256dh": p256dh, "auth": auth}}}
}

var fcmToken = "fcm-token-" + strings.Repeat("aB3_-", 30)

type deviceAnswer struct {
	DeviceID  int64  `json:"device_id"`
	UserID    int64  `json:"user_id"`
	Platform  string `json:"platform"`
	CreatedAt string `json:"created_at"`
}

func TestRegisterDevicesOfBothPlatforms(t *testing.T) {
	e := newEnv(t)
	uid, tok := e.newUser("dev")
	p256dh, auth := subscriptionKeys(t)
	path := fmt.Sprintf("/users/%d/devices", uid)

	resp := e.do("POST", path, tok, map[string]string{"platform": "fcm", "token": fcmToken})
	resp.expect(t, http.StatusCreated, "")
	var fcm deviceAnswer
	resp.decode(t, &fcm)
	if fcm.DeviceID <= 0 || fcm.UserID != uid || fcm.Platform != "fcm" || fcm.CreatedAt == "" {
		t.Fatalf("got %+v, want a new fcm device of user %d", fcm, uid)
	}
	if strings.Contains(string(resp.body), fcmToken) {
		t.Errorf("answer %s shows the token", resp.body)
	}

	resp = e.do("POST", path, tok, webpushBody("https://push.example.com/send/abc", p256dh, auth))
	resp.expect(t, http.StatusCreated, "")
	var wp deviceAnswer
	resp.decode(t, &wp)
	if wp.DeviceID <= 0 || wp.DeviceID == fcm.DeviceID || wp.Platform != "webpush" {
		t.Fatalf("got %+v, want a second, webpush device", wp)
	}

	// The same token again: 200 with the same device, no second row.
	resp = e.do("POST", path, tok, map[string]string{"platform": "fcm", "token": fcmToken})
	resp.expect(t, http.StatusOK, "")
	var again deviceAnswer
	resp.decode(t, &again)
	if again != fcm {
		t.Fatalf("registering again answered %+v, want the same %+v", again, fcm)
	}
	// Padded standard base64 keys name the same subscription.
	std := func(s string) string {
		b, _ := base64.RawURLEncoding.DecodeString(s)
		return base64.StdEncoding.EncodeToString(b)
	}
	e.do("POST", path, tok, webpushBody("https://push.example.com/send/abc", std(p256dh), std(auth))).expect(t, http.StatusOK, "")

	resp = e.do("GET", path, tok, nil)
	resp.expect(t, http.StatusOK, "")
	var list struct {
		Items []deviceAnswer `json:"items"`
	}
	resp.decode(t, &list)
	if len(list.Items) != 2 || list.Items[0] != fcm || list.Items[1] != wp {
		t.Fatalf("list %+v, want [%+v %+v]", list.Items, fcm, wp)
	}

	e.do("DELETE", fmt.Sprintf("%s/%d", path, fcm.DeviceID), tok, nil).expect(t, http.StatusNoContent, "")
	e.do("DELETE", fmt.Sprintf("%s/%d", path, fcm.DeviceID), tok, nil).expect(t, http.StatusNoContent, "")
	resp = e.do("GET", path, tok, nil)
	resp.decode(t, &list)
	if len(list.Items) != 1 || list.Items[0] != wp {
		t.Fatalf("after delete: %+v, want [%+v]", list.Items, wp)
	}
}

func TestDevicesBelongToTheirUser(t *testing.T) {
	e := newEnv(t)
	alice, aliceTok := e.newUser("alice")
	bob, bobTok := e.newUser("bob")
	resp := e.do("POST", fmt.Sprintf("/users/%d/devices", alice), aliceTok, map[string]string{"platform": "fcm", "token": fcmToken})
	resp.expect(t, http.StatusCreated, "")
	var dev deviceAnswer
	resp.decode(t, &dev)

	e.do("POST", fmt.Sprintf("/users/%d/devices", alice), bobTok, map[string]string{"platform": "fcm", "token": fcmToken + "x"}).
		expect(t, http.StatusForbidden, "forbidden")
	e.do("GET", fmt.Sprintf("/users/%d/devices", alice), bobTok, nil).expect(t, http.StatusForbidden, "forbidden")
	e.do("DELETE", fmt.Sprintf("/users/%d/devices/%d", alice, dev.DeviceID), bobTok, nil).expect(t, http.StatusForbidden, "forbidden")
	e.do("GET", fmt.Sprintf("/users/%d/devices", alice), "", nil).expect(t, http.StatusUnauthorized, "unauthorized")
	e.do("POST", fmt.Sprintf("/users/%d/devices", alice), "", map[string]string{"platform": "fcm", "token": fcmToken}).
		expect(t, http.StatusUnauthorized, "unauthorized")
	// Bob deleting Alice's device id under his own user changes nothing.
	e.do("DELETE", fmt.Sprintf("/users/%d/devices/%d", bob, dev.DeviceID), bobTok, nil).expect(t, http.StatusNoContent, "")
	var list struct {
		Items []deviceAnswer `json:"items"`
	}
	e.do("GET", fmt.Sprintf("/users/%d/devices", alice), aliceTok, nil).decode(t, &list)
	if len(list.Items) != 1 {
		t.Fatalf("alice's devices %+v, want her one device", list.Items)
	}

	// Bob signs in on Alice's phone: the token moves to him.
	resp = e.do("POST", fmt.Sprintf("/users/%d/devices", bob), bobTok, map[string]string{"platform": "fcm", "token": fcmToken})
	resp.expect(t, http.StatusCreated, "")
	var moved deviceAnswer
	resp.decode(t, &moved)
	if moved.UserID != bob || moved.DeviceID != dev.DeviceID {
		t.Fatalf("moved device %+v, want device %d of user %d", moved, dev.DeviceID, bob)
	}
	e.do("GET", fmt.Sprintf("/users/%d/devices", alice), aliceTok, nil).decode(t, &list)
	if len(list.Items) != 0 {
		t.Fatalf("alice still lists %+v", list.Items)
	}
}

func TestDeviceLimitPerUser(t *testing.T) {
	e := newEnv(t)
	uid, tok := e.newUser("many")
	path := fmt.Sprintf("/users/%d/devices", uid)
	// Registered concurrently: the cap holds anyway.
	var wg sync.WaitGroup
	statuses := make([]int, store.MaxDevicesPerUser+5)
	for i := range statuses {
		wg.Go(func() {
			statuses[i] = e.do("POST", path, tok, map[string]string{"platform": "fcm", "token": fmt.Sprintf("%s-%03d", fcmToken, i)}).status
		})
	}
	wg.Wait()
	created, refused, held := 0, 0, -1
	for i, s := range statuses {
		switch s {
		case http.StatusCreated:
			created, held = created+1, i
		case http.StatusConflict:
			refused++
		default:
			t.Errorf("status %d", s)
		}
	}
	if created != store.MaxDevicesPerUser || refused != 5 {
		t.Fatalf("created %d, refused %d; want %d and 5", created, refused, store.MaxDevicesPerUser)
	}
	e.do("POST", path, tok, map[string]string{"platform": "fcm", "token": fcmToken + "-more"}).expect(t, http.StatusConflict, "limit_exceeded")
	// Re-registering one it holds is still fine at the cap.
	e.do("POST", path, tok, map[string]string{"platform": "fcm", "token": fmt.Sprintf("%s-%03d", fcmToken, held)}).expect(t, http.StatusOK, "")
}

func TestRegisterDeviceRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	uid, tok := e.newUser("bad")
	path := fmt.Sprintf("/users/%d/devices", uid)
	p256dh, auth := subscriptionKeys(t)
	offCurve := base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...))
	compressed := base64.RawURLEncoding.EncodeToString(append([]byte{2}, make([]byte, 32)...))
	short := base64.RawURLEncoding.EncodeToString(make([]byte, 8))
	cases := []struct {
		name string
		body string
		want string // substring of the detail
	}{
		{"no platform", `{"token":"` + fcmToken + `"}`, "platform"},
		{"unknown platform", `{"platform":"apns","token":"` + fcmToken + `"}`, "platform"},
		{"fcm without token", `{"platform":"fcm"}`, "token"},
		{"fcm short token", `{"platform":"fcm","token":"abc"}`, "token"},
		{"fcm token with space", `{"platform":"fcm","token":"` + strings.Repeat("a", 40) + ` b"}`, "token"},
		{"fcm token too long", `{"platform":"fcm","token":"` + strings.Repeat("a", 2049) + `"}`, "token"},
		{"fcm with subscription", `{"platform":"fcm","token":"` + fcmToken + `","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"a","auth":"b"}}}`, "subscription"},
		{"webpush with token", `{"platform":"webpush","token":"` + fcmToken + `"}`, "token"},
		{"webpush without subscription", `{"platform":"webpush"}`, "subscription"},
		{"no endpoint", `{"platform":"webpush","subscription":{"keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}}`, "endpoint"},
		{"http endpoint", `{"platform":"webpush","subscription":{"endpoint":"http://push.example.com/x","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}}`, "endpoint"},
		{"foreign endpoint", `{"platform":"webpush","subscription":{"endpoint":"https://169.254.169.254/latest","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}}`, "endpoint"},
		{"endpoint with user", `{"platform":"webpush","subscription":{"endpoint":"https://u:p@push.example.com/x","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}}`, "endpoint"},
		{"not a url", `{"platform":"webpush","subscription":{"endpoint":"push.example.com","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}}`, "endpoint"},
		{"no keys", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x"}}`, "keys"},
		{"p256dh not base64", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"***","auth":"` + auth + `"}}}`, "p256dh"},
		{"p256dh off the curve", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"` + offCurve + `","auth":"` + auth + `"}}}`, "curve"},
		{"p256dh compressed", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"` + compressed + `","auth":"` + auth + `"}}}`, "p256dh"},
		{"auth short", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"` + p256dh + `","auth":"` + short + `"}}}`, "auth"},
		{"auth missing", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"` + p256dh + `"}}}`, "auth"},
		{"bad expirationTime", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","expirationTime":"soon","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}}`, "expirationTime"},
		{"unknown field", `{"platform":"fcm","token":"` + fcmToken + `","color":"red"}`, "color"},
		{"unknown key field", `{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `","x":"y"}}}`, "x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := e.raw("POST", path, tok, []byte(c.body))
			resp.expect(t, http.StatusBadRequest, "invalid_argument")
			if p := resp.problem(t); !strings.Contains(p.Detail, c.want) {
				t.Fatalf("detail %q does not name %q", p.Detail, c.want)
			}
		})
	}
	// A wildcard host of the policy is accepted, and an expiry time too.
	ok := fmt.Sprintf(`{"platform":"webpush","subscription":{"endpoint":"https://eu.push.example.net/x","expirationTime":1767225600000,"keys":{"p256dh":"%s","auth":"%s"}}}`, p256dh, auth)
	e.raw("POST", path, tok, []byte(ok)).expect(t, http.StatusCreated, "")
	e.raw("POST", "/users/x/devices", tok, []byte(ok)).expect(t, http.StatusBadRequest, "invalid_argument")
	e.raw("DELETE", fmt.Sprintf("%s/0", path), tok, nil).expect(t, http.StatusBadRequest, "invalid_argument")
}

func TestPushConfig(t *testing.T) {
	off := newEnv(t)
	resp := off.do("GET", "/push/config", "", nil)
	resp.expect(t, http.StatusOK, "")
	if got := strings.TrimSpace(string(resp.body)); got != `{"webpush":{"enabled":false}}` {
		t.Fatalf("without a key: %s", got)
	}
	const key = "BExampleKeyBase64url"
	on := newEnv(t, func(c *api.Config) { c.VAPIDPublicKey = key })
	resp = on.do("GET", "/push/config", "", nil)
	resp.expect(t, http.StatusOK, "")
	if got := strings.TrimSpace(string(resp.body)); got != `{"webpush":{"enabled":true,"vapid_public_key":"`+key+`"}}` {
		t.Fatalf("with a key: %s", got)
	}
}

func FuzzNewDeviceBody(f *testing.F) {
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	p256dh := base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes())
	seedBodies(f, `{"platform":"fcm","token":"`+fcmToken+`"}`,
		`{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","expirationTime":null,"keys":{"p256dh":"`+p256dh+`","auth":"AAAAAAAAAAAAAAAAAAAAAA"}}}`,
		`{"platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"BAAA","auth":"AA"}}}`,
		`{"platform":"fcm","token":1}`, `{"platform":"webpush","subscription":[]}`)
	policy := store.EndpointPolicy{"https://push.example.com"}
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := api.ParseNewDevice(body, policy)
		checkDecoded(t, body, err)
		if err != nil {
			return
		}
		if again, verr := d.Validate(policy); verr != nil || again != d {
			t.Fatalf("body %q accepted as %+v, which does not validate to itself: %+v %v", body, d, again, verr)
		}
		if d.Platform == store.PlatformWebPush && !policy.Allows(d.Token) {
			t.Fatalf("body %q accepted with endpoint %q outside the policy", body, d.Token)
		}
	})
}
