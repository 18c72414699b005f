package webui

import (
	"errors"
	"net/http"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/node/session"
)

// The lock screen: while the device is locked every route that shows content answers 423 Locked
// ({"error","locked":true}), and the page shows only a passphrase field, which posts to
// /api/v1/unlock (node/localapi's Gate: the wrong-passphrase wait applies). The page's Lock button
// posts /api/v1/lock. Requests the page makes by itself carry localapi.BackgroundHeader, so an open
// page does not keep the device unlocked.

// current returns the unlocked node and a channel closed when it goes, or answers 423 and false.
func (s *Server) current(w http.ResponseWriter, r *http.Request) (*node.Node, <-chan struct{}, bool) {
	n, done, err := s.lock.Current()
	if err != nil {
		writeJSON(w, http.StatusLocked, struct {
			Error  string `json:"error"`
			Locked bool   `json:"locked"`
		}{err.Error(), true})
		return nil, nil, false
	}
	if r.Header.Get(localapi.BackgroundHeader) == "" {
		s.lock.Touch()
	}
	return n, done, true
}

// fixed is the lock of a daemon without one: its node is always there, and it cannot lock.
type fixed struct{ n *node.Node }

var errNoLock = errors.New("this node has no lock")

func (f fixed) Current() (*node.Node, <-chan struct{}, error) { return f.n, nil, nil }
func (fixed) Touch()                                          {}
func (fixed) State() session.State                            { return session.State{} }
func (fixed) Lock() error                                     { return errNoLock }
func (fixed) Unlock([]byte) error                             { return nil }
func (fixed) Wipe() error                                     { return errNoLock }
