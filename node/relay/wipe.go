package relay

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// A relay carries remote wipe orders (node/wipeproto) for lost devices: devices enrolled for one of
// its topics hand it the orders their admins issued, and it answers a device that asks with the
// orders naming that device, whether or not the device is still on a roster (a removed device is
// refused everything else). An order names no team; the relay learns only that some device is to be
// wiped.

const (
	metaWipeOrders = "wipe-orders"
	// maxWipeOrders bounds the orders a relay carries; beyond it the one expiring first is dropped.
	maxWipeOrders = 4096
)

func (r *Relay) startWipes() {
	r.wipes = wipeproto.NewSet(maxWipeOrders)
	b, err := r.st.meta(metaWipeOrders)
	if err == nil && len(b)%wipeorder.Size == 0 {
		for i := 0; i < len(b); i += wipeorder.Size {
			if o, err := wipeorder.Parse(b[i : i+wipeorder.Size]); err == nil && !o.Expired(r.now()) {
				r.wipes.Add(o)
			}
		}
	}
	srv := &wipeproto.Server{Orders: r.wipes.For, Now: r.now, Accept: r.acceptWipe}
	r.host.SetStreamHandler(wipeproto.Protocol, srv.Handle)
}

func (r *Relay) acceptWipe(p peer.ID, o *wipeorder.Order) error {
	r.mu.Lock()
	enrolled := len(r.enrolled[p]) > 0
	r.mu.Unlock()
	if !enrolled {
		return errors.New("only enrolled devices hand the relay orders")
	}
	if !r.wipes.Add(o) {
		return nil
	}
	var b []byte
	for _, o := range r.wipes.All(r.now()) {
		b = append(b, o.Bytes()...)
	}
	r.log.Info("carrying a remote wipe order", "target", o.Target)
	return r.st.putMeta(metaWipeOrders, b)
}
