package localapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/session"
	"github.com/fieldmesh/fieldmesh/node/unixapi"
	"github.com/fieldmesh/fieldmesh/storage"
)

// The lock's routes, served by Gate whether the device is locked or not:
//
//	GET  /v1/lock                      {"locked","failures","wait"}: wait in seconds until the next try
//	POST /v1/lock                      locks the device now
//	POST /v1/unlock   {"passphrase"}   423 while a wait after wrong passphrases runs, 403 if wrong
//	POST /v1/wipe     {"confirm":"wipe this device"}   destroys the store and the data directory
//
// Every other route answers 423 Locked while the device is locked, and is served by the unlocked
// node's Server otherwise; a request in progress (a messages --follow) ends when the device locks.
// Remote wipe is a node route: POST /v1/remote-wipe {"team","device","ttl"} -> {"target","expires"}.

// lockedError is the answer of a route refused while locked.
type lockedError struct {
	Error  string `json:"error"`
	Locked bool   `json:"locked"`
}

// Locker is the daemon's lock (node/session.Session).
type Locker interface {
	Current() (*node.Node, <-chan struct{}, error)
	Touch()
	State() session.State
	Lock() error
	Unlock(passphrase []byte) error
	Wipe() error
}

// WipeConfirm is the text POST /v1/wipe must carry, so no stray request wipes a device.
const WipeConfirm = "wipe this device"

// LockState is the answer of GET /v1/lock.
type LockState struct {
	Locked   bool    `json:"locked"`
	Failures int     `json:"failures"`
	Wait     float64 `json:"wait"` // seconds
}

// UnlockRequest carries the passphrase.
type UnlockRequest struct {
	Passphrase string `json:"passphrase"`
}

// WipeRequest confirms a wipe.
type WipeRequest struct {
	Confirm string `json:"confirm"`
}

// RemoteWipeRequest orders a remote wipe of a device of the team. TTL is how long the order is carried
// (a Go duration, "" = 90 days).
type RemoteWipeRequest struct {
	Team   string `json:"team"`
	Device string `json:"device"`
	TTL    string `json:"ttl"`
}

// RemoteWipe is the answer to a remote wipe.
type RemoteWipe struct {
	Target  string `json:"target"`
	Expires string `json:"expires"`
}

// Gate serves the local API of whichever node is unlocked, and the lock's routes. Background
// requests (GET /v1/lock, and those carrying the header X-Fieldmesh-Background) do not count as use
// for the idle lock.
type Gate struct {
	Locker  Locker
	Logger  *slog.Logger
	UILogin func() string

	mu  sync.Mutex
	cur *node.Node
	h   http.Handler
}

// BackgroundHeader marks a request the user did not make (a page refreshing itself).
const BackgroundHeader = "X-Fieldmesh-Background"

// Handler returns the gate's routes.
func (g *Gate) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/lock", g.state)
	mux.HandleFunc("POST /v1/lock", func(w http.ResponseWriter, r *http.Request) {
		if err := g.Locker.Lock(); err != nil {
			writeErr(w, err)
			return
		}
		g.state(w, r)
	})
	mux.HandleFunc("POST /v1/unlock", g.unlock)
	mux.HandleFunc("POST /v1/wipe", g.wipe)
	// The UI's address is served locked or not: the lock screen is where one unlocks.
	mux.HandleFunc("GET /v1/ui", (&Server{UILogin: g.UILogin}).ui)
	mux.HandleFunc("/", g.forward)
	return mux
}

// LockStateOf converts a session state.
func LockStateOf(s session.State) LockState {
	return LockState{Locked: s.Locked, Failures: s.Failures, Wait: s.Wait.Seconds()}
}

func (g *Gate) state(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, LockStateOf(g.Locker.State()))
}

func (g *Gate) unlock(w http.ResponseWriter, r *http.Request) {
	var req UnlockRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	pass := []byte(req.Passphrase)
	err := g.Locker.Unlock(pass)
	clear(pass)
	var we *session.WaitError
	switch {
	case errors.As(err, &we):
		writeJSON(w, http.StatusLocked, apiError{Error: we.Error()})
	case errors.Is(err, storage.ErrWrongPassphrase):
		writeJSON(w, http.StatusForbidden, apiError{Error: "wrong passphrase"})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
	default:
		g.Locker.Touch()
		g.state(w, r)
	}
}

func (g *Gate) wipe(w http.ResponseWriter, r *http.Request) {
	var req WipeRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.Confirm != WipeConfirm {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "confirm the wipe with the text: " + WipeConfirm})
		return
	}
	if err := g.Locker.Wipe(); err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Wiped bool `json:"wiped"`
	}{true})
}

// forward serves the route with the unlocked node's API, or refuses it while locked.
func (g *Gate) forward(w http.ResponseWriter, r *http.Request) {
	n, done, err := g.Locker.Current()
	if err != nil {
		writeJSON(w, http.StatusLocked, lockedError{Error: err.Error(), Locked: true})
		return
	}
	if r.Header.Get(BackgroundHeader) == "" {
		g.Locker.Touch()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	g.handlerFor(n).ServeHTTP(w, r.WithContext(ctx))
}

func (g *Gate) handlerFor(n *node.Node) http.Handler {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur != n {
		g.cur = n
		g.h = (&Server{Node: n, Logger: g.Logger, UILogin: g.UILogin}).Handler()
	}
	return g.h
}

// Serve serves the gate on l until ctx ends.
func (g *Gate) Serve(ctx context.Context, l net.Listener) error {
	return unixapi.Serve(ctx, l, g.Handler())
}

func (s *Server) remoteWipe(w http.ResponseWriter, r *http.Request) {
	var req RemoteWipeRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	ttl, err := durationField("ttl", req.TTL)
	if err != nil {
		writeErr(w, err)
		return
	}
	o, err := s.Node.RemoteWipe(req.Team, req.Device, ttl)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, RemoteWipe{Target: o.Target.String(), Expires: o.Expires.UTC().Format(time.RFC3339)})
}

// LockState returns the lock's state.
func (c *Client) LockState(ctx context.Context) (LockState, error) {
	var s LockState
	return s, c.do(ctx, http.MethodGet, "/v1/lock", nil, &s)
}

// Lock locks the device.
func (c *Client) Lock(ctx context.Context) (LockState, error) {
	var s LockState
	return s, c.do(ctx, http.MethodPost, "/v1/lock", struct{}{}, &s)
}

// Unlock unlocks the device with the passphrase.
func (c *Client) Unlock(ctx context.Context, passphrase string) (LockState, error) {
	var s LockState
	return s, c.do(ctx, http.MethodPost, "/v1/unlock", UnlockRequest{Passphrase: passphrase}, &s)
}

// Wipe destroys the device's store.
func (c *Client) Wipe(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/wipe", WipeRequest{Confirm: WipeConfirm}, nil)
}

// RemoteWipe removes a device from the team and issues a wipe order for it.
func (c *Client) RemoteWipe(ctx context.Context, team, device, ttl string) (RemoteWipe, error) {
	var out RemoteWipe
	return out, c.do(ctx, http.MethodPost, "/v1/remote-wipe", RemoteWipeRequest{Team: team, Device: device, TTL: ttl}, &out)
}
