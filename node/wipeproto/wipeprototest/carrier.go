// Package wipeprototest is a carrier of remote wipe orders for tests: a host that answers fetches
// from the orders it is handed, as a relay or a member does, and says each time it was asked.
package wipeprototest

import (
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Carrier answers wipe order fetches on a host.
type Carrier struct {
	set *wipeproto.Set
	// Asked receives a value each time a device asks (dropped when 64 are waiting).
	Asked chan struct{}
}

// Serve makes h a carrier: it answers fetches with the orders added to the returned Carrier.
func Serve(h host.Host) *Carrier {
	c := &Carrier{set: wipeproto.NewSet(8), Asked: make(chan struct{}, 64)}
	srv := &wipeproto.Server{Orders: c.orders}
	h.SetStreamHandler(wipeproto.Protocol, srv.Handle)
	return c
}

// Add hands the carrier an order.
func (c *Carrier) Add(o *wipeorder.Order) { c.set.Add(o) }

func (c *Carrier) orders(target identity.DeviceID) []*wipeorder.Order {
	found := c.set.For(target)
	select {
	case c.Asked <- struct{}{}:
	default:
	}
	return found
}
