// Package wipeproto carries remote wipe orders (sync/wipeorder) over one libp2p stream protocol,
// spoken by devices (locked or not) and clinic relays alike. It is how an order reaches a lost device
// that is no longer a member: the device asks every peer it connects to whether that peer carries an
// order for it, and a peer answers with the orders that name the device it is talking to, as proved
// by the connection's Noise handshake (a peer id is the device's Ed25519 key). Nobody can ask for
// another device's orders, and the answer holds nothing about any team.
//
// /fieldmesh/wipe/1.0.0, opened by either side; every message is one sync/framing frame:
//
//	fetch   opener -> server  'F'
//	        server -> opener  uvarint n (0..MaxOrders) | n × order (wipeorder.Size bytes each)
//	offer   opener -> server  'C' | order
//	        server -> opener  status u8 (0 taken) | message
//
// A fetch is answered to anyone (it reveals only orders naming the asker). An offer is taken only if
// the server's Accept says so (a relay takes offers from enrolled devices, a device from members of
// its teams), and only for a well-formed order whose signature verifies and that has not expired.
package wipeproto

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/framing"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Protocol is the stream protocol id.
const Protocol = "/fieldmesh/wipe/1.0.0"

// Limits.
const (
	// MaxOrders is the most orders one fetch answer carries (orders naming one device: an admin
	// issues one, perhaps a few).
	MaxOrders = 8
	// Timeout bounds one exchange at both ends.
	Timeout  = 15 * time.Second
	maxFrame = 1 + binary.MaxVarintLen64 + MaxOrders*wipeorder.Size
)

// Server answers the protocol for a set of carried orders.
type Server struct {
	// Orders returns the orders carried for target (at most MaxOrders are sent). Required.
	Orders func(target identity.DeviceID) []*wipeorder.Order
	// Accept decides whether to carry an offered order, already parsed, signature-checked and not
	// expired, from peer p. Nil refuses every offer.
	Accept func(p peer.ID, o *wipeorder.Order) error
	// Now is the clock for expiry. Nil is time.Now.
	Now func() time.Time
}

func (s *Server) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// Handle serves one stream.
func (s *Server) Handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(Timeout))
	req, err := framing.Read(st, 1+wipeorder.Size)
	if err != nil || len(req) == 0 {
		_ = st.Reset()
		return
	}
	switch req[0] {
	case 'F':
		if len(req) != 1 {
			_ = st.Reset()
			return
		}
		target, err := relayproto.DeviceOf(st.Conn().RemotePeer())
		if err != nil {
			_ = st.Reset()
			return
		}
		var out []byte
		var n uint64
		now := s.now()
		for _, o := range s.Orders(target) {
			if n == MaxOrders {
				break
			}
			if o.Target != target || o.Expired(now) {
				continue
			}
			out = append(out, o.Bytes()...)
			n++
		}
		_ = framing.Write(st, append(binary.AppendUvarint(nil, n), out...))
	case 'C':
		status, msg := byte(0), "taken"
		if err := s.offer(st.Conn().RemotePeer(), req[1:]); err != nil {
			status, msg = 1, err.Error()
		}
		_ = framing.Write(st, append([]byte{status}, msg...))
	default:
		_ = st.Reset()
	}
}

func (s *Server) offer(p peer.ID, b []byte) error {
	o, err := wipeorder.Parse(b)
	if err != nil {
		return err
	}
	if o.Expired(s.now()) {
		return wipeorder.ErrExpired
	}
	if s.Accept == nil {
		return errors.New("wipeproto: this peer carries no orders")
	}
	return s.Accept(p, o)
}

// Fetch asks p for the orders that name this host's device. Orders that do not parse, or name another
// device, are dropped (a carrier cannot make this device act on them anyway: the caller still runs
// wipeorder's Check).
func Fetch(ctx context.Context, h host.Host, p peer.ID) ([]*wipeorder.Order, error) {
	self, err := relayproto.DeviceOf(h.ID())
	if err != nil {
		return nil, err
	}
	st, err := h.NewStream(ctx, p, Protocol)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() }) // a peer that never answers holds nothing past ctx
	defer stop()
	_ = st.SetDeadline(time.Now().Add(Timeout))
	if err := framing.Write(st, []byte{'F'}); err != nil {
		_ = st.Reset()
		return nil, err
	}
	b, err := framing.Read(st, maxFrame)
	if err != nil {
		_ = st.Reset()
		return nil, err
	}
	return DecodeFetch(b, self)
}

// Ask is how a device, locked or not, asks p for its orders: it fetches them (Fetch) and returns the
// first that passes wipeorder's Check for self, with isAdmin its own view of its teams' admins, at now;
// nil if none does. refused, if set, is told why each other order failed.
func Ask(ctx context.Context, h host.Host, p peer.ID, self identity.DeviceID, isAdmin func(identity.DeviceID) bool,
	now time.Time, refused func(error)) (*wipeorder.Order, error) {
	orders, err := Fetch(ctx, h, p)
	if err != nil {
		return nil, err
	}
	for _, o := range orders {
		err := o.Check(self, isAdmin, now)
		if err == nil {
			return o, nil
		}
		if refused != nil {
			refused(err)
		}
	}
	return nil, nil
}

// Once acts on the first order a device accepts, and only on that one: every peer may carry an order
// naming the device, and the rounds ask them all.
type Once struct{ once sync.Once }

// Act hands o, an order that passed its Check, to act (if not nil) unless an order was handed before.
func (w *Once) Act(o *wipeorder.Order, act func(*wipeorder.Order)) {
	w.once.Do(func() {
		if act != nil {
			act(o)
		}
	})
}

// Rounds asks connected peers for orders round after round (each WipeAsk) so that a peer that holds
// its stream open without answering (any LAN peer can) holds back no other: each peer's ask runs on
// its own goroutine, and a peer whose ask of an earlier round is still running is left out.
type Rounds struct {
	mu   sync.Mutex
	busy map[peer.ID]bool
}

// Run starts a round: ask(p) for each of peers not still being asked, each run by spawn (which runs
// its function on a new goroutine the caller waits for at close).
func (r *Rounds) Run(peers []peer.ID, spawn func(func()), ask func(peer.ID)) {
	r.mu.Lock()
	if r.busy == nil {
		r.busy = map[peer.ID]bool{}
	}
	var start []peer.ID
	for _, p := range peers {
		if !r.busy[p] {
			r.busy[p] = true
			start = append(start, p)
		}
	}
	r.mu.Unlock()
	for _, p := range start {
		spawn(func() {
			defer func() {
				r.mu.Lock()
				delete(r.busy, p)
				r.mu.Unlock()
			}()
			ask(p)
		})
	}
}

// DecodeFetch decodes a fetch answer and keeps the orders that parse and name self. A malformed answer
// is an error; it never panics.
func DecodeFetch(b []byte, self identity.DeviceID) ([]*wipeorder.Order, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > MaxOrders || k != len(binary.AppendUvarint(nil, n)) {
		return nil, errors.New("wipeproto: bad order count")
	}
	rest := b[k:]
	if uint64(len(rest)) != n*wipeorder.Size {
		return nil, fmt.Errorf("wipeproto: %d bytes for %d orders", len(rest), n)
	}
	var out []*wipeorder.Order
	for i := uint64(0); i < n; i++ {
		o, err := wipeorder.Parse(rest[i*wipeorder.Size : (i+1)*wipeorder.Size])
		if err != nil || o.Target != self {
			continue
		}
		out = append(out, o)
	}
	return out, nil
}

// Offer hands p an order to carry.
func Offer(ctx context.Context, h host.Host, p peer.ID, o *wipeorder.Order) error {
	st, err := h.NewStream(ctx, p, Protocol)
	if err != nil {
		return err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(Timeout))
	if err := framing.Write(st, append([]byte{'C'}, o.Bytes()...)); err != nil {
		_ = st.Reset()
		return err
	}
	b, err := framing.Read(st, 512)
	if err != nil {
		_ = st.Reset()
		return err
	}
	if len(b) == 0 {
		return errors.New("wipeproto: empty answer")
	}
	if b[0] != 0 {
		return fmt.Errorf("wipeproto: order refused: %s", b[1:])
	}
	return nil
}

// Set is a bounded set of carried orders, safe for concurrent use.
type Set struct {
	mu     sync.Mutex
	orders map[string]*wipeorder.Order
	max    int
}

// NewSet returns an empty set holding at most max orders (an offer beyond it drops the order that
// expires first).
func NewSet(max int) *Set {
	return &Set{orders: map[string]*wipeorder.Order{}, max: max}
}

// Add adds o; it reports whether it was new.
func (s *Set) Add(o *wipeorder.Order) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.orders[o.Key()]; ok {
		return false
	}
	if len(s.orders) >= s.max {
		var first string
		for k, v := range s.orders {
			if first == "" || v.Expires.Before(s.orders[first].Expires) {
				first = k
			}
		}
		delete(s.orders, first)
	}
	s.orders[o.Key()] = o
	return true
}

// For returns the orders naming target.
func (s *Set) For(target identity.DeviceID) []*wipeorder.Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*wipeorder.Order
	for _, o := range s.orders {
		if o.Target == target {
			out = append(out, o)
		}
	}
	return out
}

// All returns every order held, dropping those expired at now.
func (s *Set) All(now time.Time) []*wipeorder.Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*wipeorder.Order, 0, len(s.orders))
	for k, o := range s.orders {
		if o.Expired(now) {
			delete(s.orders, k)
			continue
		}
		out = append(out, o)
	}
	return out
}
