package emul

import (
	"context"
	"errors"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// errNoContact is what a stream between two devices out of contact gets.
var errNoContact = errors.New("emul: no contact between these devices")

// guardedHost is a device's mocknet host as its node sees it: every stream the node opens or
// accepts is refused unless the trace has the two devices in contact, and is kept so that it is
// reset when their contact closes. Mocknet alone lets a stream opened while its connection closes
// outlive the connection (package doc); this makes the trace's contacts the only way bytes go.
type guardedHost struct {
	host.Host
	e   *emulation
	idx int
}

func (g *guardedHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if !g.e.track(g.idx, p, nil) {
		return nil, errNoContact // refused before a byte goes
	}
	s, err := g.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	if !g.e.track(g.idx, p, s) {
		_ = s.Reset()
		return nil, errNoContact
	}
	return s, nil
}

func (g *guardedHost) guard(h network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		if !g.e.track(g.idx, s.Conn().RemotePeer(), s) {
			_ = s.Reset()
			return
		}
		h(s)
	}
}

func (g *guardedHost) SetStreamHandler(pid protocol.ID, h network.StreamHandler) {
	g.Host.SetStreamHandler(pid, g.guard(h))
}

func (g *guardedHost) SetStreamHandlerMatch(pid protocol.ID, m func(protocol.ID) bool, h network.StreamHandler) {
	g.Host.SetStreamHandlerMatch(pid, m, g.guard(h))
}

// track keeps s, a stream of device i with peer p (nil: none, only the question), if the two are in
// contact, and reports whether they are.
func (e *emulation) track(i int, p peer.ID, s network.Stream) bool {
	e.smu.Lock()
	defer e.smu.Unlock()
	j, ok := e.byPeer[p]
	if !ok {
		return false
	}
	k := [2]int{min(i, j), max(i, j)}
	if e.open[k] == 0 && !e.enrolling {
		return false
	}
	if s != nil {
		e.streams[k] = append(e.streams[k], s)
	}
	return true
}

// cutAll ends enrolment (every pair was in contact) and resets every stream kept.
func (e *emulation) cutAll() {
	e.smu.Lock()
	e.enrolling = false
	all := e.streams
	e.streams = make(map[[2]int][]network.Stream)
	e.smu.Unlock()
	for _, ss := range all {
		for _, s := range ss {
			_ = s.Reset()
		}
	}
}

// cut resets every stream kept between devices a and b (their contact closed).
func (e *emulation) cut(a, b int) {
	k := [2]int{min(a, b), max(a, b)}
	e.smu.Lock()
	ss := e.streams[k]
	delete(e.streams, k)
	e.smu.Unlock()
	for _, s := range ss {
		_ = s.Reset()
	}
}
