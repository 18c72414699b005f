package localapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/session"
)

// lockedOnly is a Locker that is always locked.
type lockedOnly struct{}

func (lockedOnly) Current() (*node.Node, <-chan struct{}, error) { return nil, nil, session.ErrLocked }
func (lockedOnly) Touch()                                        {}
func (lockedOnly) State() session.State                          { return session.State{Locked: true} }
func (lockedOnly) Lock() error                                   { return nil }
func (lockedOnly) Unlock([]byte) error                           { return errors.New("no") }
func (lockedOnly) Wipe() error                                   { return nil }

// While locked the gate still answers the lock's routes and the UI's address (the lock screen is
// where one unlocks), and refuses the rest with 423; a wipe needs its confirmation text.
func TestGateWhileLocked(t *testing.T) {
	g := &Gate{Locker: lockedOnly{}, UILogin: func() string { return "http://127.0.0.1:1/#token=x" }}
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/lock", "", http.StatusOK},
		{"GET", "/v1/ui", "", http.StatusOK},
		{"GET", "/v1/teams", "", http.StatusLocked},
		{"GET", "/v1/status", "", http.StatusLocked},
		{"POST", "/v1/remote-wipe", `{"team":"t","device":"d"}`, http.StatusLocked},
		{"POST", "/v1/wipe", `{}`, http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %s; want %d", tc.method, tc.path, resp.Status, tc.want)
		}
	}
}
