// Package proximitytest is an in-memory proximity.Radio: radios on one Air are in range of each other
// until Separate puts two apart. Links are reliable and ordered, each direction a bounded queue
// delivered by its own goroutine, as a radio's callbacks arrive on a thread of their own. Node tests
// run devices over it with no network at all.
package proximitytest

import (
	"errors"
	"fmt"
	stdsync "sync"

	"github.com/fieldmesh/fieldmesh/node/proximity"
)

// Events is what a radio reports to; *proximity.Adapter implements it.
type Events interface {
	Found(endpoint, name string)
	Lost(endpoint string)
	Incoming(endpoint string)
	Received(endpoint string, payload []byte)
	Disconnected(endpoint string)
}

var _ Events = (*proximity.Adapter)(nil)

// queueLen is how many payloads one direction of a link holds before Send waits.
const queueLen = 64

// Air is the medium. The zero value is not usable: use New.
type Air struct {
	mu     stdsync.Mutex
	radios []*Radio
	ids    map[string]*Radio // every endpoint id a radio has had
	apart  map[[2]*Radio]bool
	next   int
	wg     stdsync.WaitGroup
}

// New returns an empty Air.
func New() *Air { return &Air{apart: make(map[[2]*Radio]bool), ids: make(map[string]*Radio)} }

// Radio is one device's radio on an Air. It implements proximity.Radio.
type Radio struct {
	air *Air
	id  string // its endpoint id, as others see it (guarded by air.mu: Rejoin changes it)
	n   int    // its place in the order radios were made

	// guarded by air.mu
	ev      Events
	name    string
	started bool
	links   map[*Radio]*half // by the radio at the other end
	sent    int              // payloads sent, for tests
}

var _ proximity.Radio = (*Radio)(nil)

// half is one direction of a link: what from sends to to.
type half struct {
	q    chan []byte
	done chan struct{}
	once stdsync.Once
}

func (h *half) close() { h.once.Do(func() { close(h.done) }) }

// NewRadio adds a radio to the Air. Attach its events before Start.
func (a *Air) NewRadio() *Radio {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next++
	r := &Radio{air: a, id: fmt.Sprintf("ep%d", a.next), n: a.next, links: make(map[*Radio]*half)}
	a.radios = append(a.radios, r)
	a.ids[r.id] = r
	return r
}

// Attach sets where r reports what it sees.
func (r *Radio) Attach(ev Events) {
	r.air.mu.Lock()
	r.ev = ev
	r.air.mu.Unlock()
}

// Endpoint is r's endpoint id.
func (r *Radio) Endpoint() string {
	r.air.mu.Lock()
	defer r.air.mu.Unlock()
	return r.id
}

// Sent is how many payloads r has sent.
func (r *Radio) Sent() int {
	r.air.mu.Lock()
	defer r.air.mu.Unlock()
	return r.sent
}

func pair(a, b *Radio) [2]*Radio {
	if a.n < b.n {
		return [2]*Radio{a, b}
	}
	return [2]*Radio{b, a}
}

// inRange reports whether a and b hear each other. air.mu held.
func (a *Air) inRangeLocked(x, y *Radio) bool {
	return x != y && x.started && y.started && x.ev != nil && y.ev != nil && !a.apart[pair(x, y)]
}

// Start advertises name; every started radio in range finds r, and r finds them.
func (r *Radio) Start(name string) error {
	a := r.air
	a.mu.Lock()
	if r.ev == nil {
		a.mu.Unlock()
		return errors.New("proximitytest: radio not attached")
	}
	r.started, r.name = true, name
	var calls []func()
	for _, o := range a.radios {
		if a.inRangeLocked(r, o) {
			oid, rid, oname, oev, rev := o.id, r.id, o.name, o.ev, r.ev
			calls = append(calls, func() { rev.Found(oid, oname) }, func() { oev.Found(rid, name) })
		}
	}
	a.mu.Unlock()
	for _, f := range calls {
		f()
	}
	return nil
}

func (a *Air) byID(id string) *Radio { return a.ids[id] }

// Connect opens a link to endpoint and reports Incoming at the other end before it returns.
func (r *Radio) Connect(endpoint string) error {
	a := r.air
	a.mu.Lock()
	o := a.byID(endpoint)
	if o == nil || !a.inRangeLocked(r, o) {
		a.mu.Unlock()
		return errors.New("proximitytest: endpoint not in range")
	}
	if r.links[o] != nil {
		a.mu.Unlock()
		return errors.New("proximitytest: link already open")
	}
	out := &half{q: make(chan []byte, queueLen), done: make(chan struct{})}
	in := &half{q: make(chan []byte, queueLen), done: make(chan struct{})}
	r.links[o], o.links[r] = out, in
	a.deliverLocked(out, o.ev, r.id)
	a.deliverLocked(in, r.ev, o.id)
	oev, rid := o.ev, r.id
	a.mu.Unlock()
	oev.Incoming(rid)
	return nil
}

// deliverLocked starts the goroutine that hands h's payloads to ev as coming from src.
func (a *Air) deliverLocked(h *half, ev Events, src string) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			select {
			case p := <-h.q:
				ev.Received(src, p)
			case <-h.done:
				return
			}
		}
	}()
}

// Send queues a copy of payload on the link to endpoint.
func (r *Radio) Send(endpoint string, payload []byte) error {
	a := r.air
	a.mu.Lock()
	o := a.byID(endpoint)
	var h *half
	if o != nil {
		h = r.links[o]
	}
	if h != nil {
		r.sent++
	}
	a.mu.Unlock()
	if h == nil {
		return proximity.ErrNoLink
	}
	p := append([]byte(nil), payload...)
	select {
	case h.q <- p:
		return nil
	case <-h.done:
		return proximity.ErrNoLink
	}
}

// Disconnect closes the link to endpoint; the other end is told Disconnected.
func (r *Radio) Disconnect(endpoint string) error {
	a := r.air
	a.mu.Lock()
	o := a.byID(endpoint)
	if o == nil {
		a.mu.Unlock()
		return nil
	}
	f := a.cutLocked(r, o)
	a.mu.Unlock()
	f()
	return nil
}

// cutLocked closes the link between r and o, if any, and returns what tells o (and r, if both) of it.
func (a *Air) cutLocked(r, o *Radio) func() {
	h1, h2 := r.links[o], o.links[r]
	if h1 == nil && h2 == nil {
		return func() {}
	}
	delete(r.links, o)
	delete(o.links, r)
	for _, h := range []*half{h1, h2} {
		if h != nil {
			h.close()
		}
	}
	oev, rev, rid, oid := o.ev, r.ev, r.id, o.id
	return func() {
		oev.Disconnected(rid)
		rev.Disconnected(oid)
	}
}

// Stop ends r's links and advertising; the radios in range lose it.
func (r *Radio) Stop() error {
	a := r.air
	a.mu.Lock()
	var calls []func()
	for _, o := range a.radios {
		if a.inRangeLocked(r, o) {
			oev, rid := o.ev, r.id
			calls = append(calls, func() { oev.Lost(rid) })
		}
		calls = append(calls, a.cutLocked(r, o))
	}
	r.started = false
	a.mu.Unlock()
	for _, f := range calls {
		f()
	}
	return nil
}

// Separate puts x and y out of each other's range: their link ends and each loses the other.
func (a *Air) Separate(x, y *Radio) {
	a.mu.Lock()
	var calls []func()
	if a.inRangeLocked(x, y) {
		xev, yev, xid, yid := x.ev, y.ev, x.id, y.id
		calls = append(calls, func() { xev.Lost(yid) }, func() { yev.Lost(xid) })
	}
	calls = append(calls, a.cutLocked(x, y))
	a.apart[pair(x, y)] = true
	a.mu.Unlock()
	for _, f := range calls {
		f()
	}
}

// Close stops every radio and waits for the delivery goroutines.
func (a *Air) Close() {
	a.mu.Lock()
	rs := append([]*Radio(nil), a.radios...)
	a.mu.Unlock()
	for _, r := range rs {
		r.Stop()
	}
	a.wg.Wait()
}

// Rejoin puts x and y back in range (undoing Separate): each finds the other under a new endpoint
// id, as a radio that discovers a device again does, so nothing still in flight on their old link
// reaches a new one.
func (a *Air) Rejoin(x, y *Radio) {
	a.mu.Lock()
	delete(a.apart, pair(x, y))
	for _, r := range []*Radio{x, y} {
		a.next++
		r.id = fmt.Sprintf("ep%d", a.next)
		a.ids[r.id] = r
	}
	var calls []func()
	if a.inRangeLocked(x, y) {
		xev, yev, xname, yname, xid, yid := x.ev, y.ev, x.name, y.name, x.id, y.id
		calls = append(calls, func() { xev.Found(yid, yname) }, func() { yev.Found(xid, xname) })
	}
	a.mu.Unlock()
	for _, f := range calls {
		f()
	}
}
