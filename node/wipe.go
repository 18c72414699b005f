package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/wipeproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Remote wipe (docs/security.md, "Lock and wipe"): an admin removes a lost device from the team and
// signs a wipe order for it (sync/wipeorder). The device removal is the ordinary one (RemoveDevice:
// the team re-keys without the device at once); the order travels beside the team, not in it: every
// node and relay carries the orders it was handed (wipeproto.Set, kept in the store's settings), hands
// them to its relays and to members of its teams it meets, and answers a device that asks for the
// orders naming it. On every new connection, and of every connected peer each Config.WipeAsk, a node
// asks for orders naming itself, and acts on one that passes wipeorder's Check against its own view of
// its teams' admins (Config.OnWipe).

const (
	settingWipeOrders = "wipe-orders"
	// maxCarried bounds the orders a node carries for others.
	maxCarried = 256
)

// AdminOf reports whether d is an admin device, not removed, of one of this device's teams, as this
// device sees them.
func (n *Node) AdminOf(d identity.DeviceID) bool {
	for _, t := range n.teamList() {
		if p, ok := t.snapshot().PersonOf(d); ok && p.Admin {
			return true
		}
	}
	return false
}

// loadWipeOrders restores the orders this node carries.
func (n *Node) loadWipeOrders() error {
	n.wipes = wipeproto.NewSet(maxCarried)
	b, err := n.st.Setting(settingWipeOrders)
	if err != nil || len(b)%wipeorder.Size != 0 {
		return nil // none yet (or an unreadable list, which only loses what this node carries)
	}
	for i := 0; i+wipeorder.Size <= len(b); i += wipeorder.Size {
		if o, err := wipeorder.Parse(b[i : i+wipeorder.Size]); err == nil && !o.Expired(n.now()) {
			n.wipes.Add(o)
		}
	}
	return nil
}

func (n *Node) storeWipeOrders() error {
	var b []byte
	for _, o := range n.wipes.All(n.now()) {
		b = append(b, o.Bytes()...)
	}
	return n.st.PutSetting(settingWipeOrders, b)
}

// carryWipe adds an order to what this node carries and stores it.
func (n *Node) carryWipe(o *wipeorder.Order) error {
	if !n.wipes.Add(o) {
		return nil
	}
	return n.storeWipeOrders()
}

// wipeServer is this node's side of wipeproto: it answers fetches from anyone (with the orders naming
// them only) and carries orders offered by members of its teams and by its relays.
func (n *Node) wipeServer() *wipeproto.Server {
	return &wipeproto.Server{
		Orders: n.wipes.For,
		Now:    n.now,
		Accept: func(p peer.ID, o *wipeorder.Order) error {
			d, err := deviceOf(p)
			if err != nil || !(n.memberAnywhere(d) || n.isRelay(p)) {
				return errors.New("only members of this device's teams hand it orders")
			}
			return n.carryWipe(o)
		},
	}
}

func (n *Node) memberAnywhere(d identity.DeviceID) bool {
	for _, t := range n.teamList() {
		if t.isMember(d) {
			return true
		}
	}
	return false
}

// wipeContact runs on every new connection: it asks the peer for orders naming this device, and hands
// it the orders this node carries if it is a relay of this node or a member of one of its teams.
func (n *Node) wipeContact(p peer.ID) {
	ctx, cancel := context.WithTimeout(n.ctx, wipeproto.Timeout)
	defer cancel()
	if n.askWipe(ctx, p) {
		return
	}
	d, err := deviceOf(p)
	if err != nil || !(n.isRelay(p) || n.memberAnywhere(d)) {
		return
	}
	for _, o := range n.wipes.All(n.now()) {
		if o.Target == d {
			continue // the lost device fetches its order; it is not handed it to carry
		}
		if err := wipeproto.Offer(ctx, n.host, p, o); err != nil {
			n.log.Debug("wipe order not handed over", "peer", p.ShortString(), "err", err)
		}
	}
}

// askWipe asks p for orders naming this device and acts on the first that passes its Check. It
// reports whether one did.
func (n *Node) askWipe(ctx context.Context, p peer.ID) bool {
	o, _ := wipeproto.Ask(ctx, n.host, p, n.id.Device.ID(), n.AdminOf, n.now(), func(err error) {
		n.log.Warn("wipe order refused", "peer", p.ShortString(), "err", err)
	})
	if o == nil {
		return false
	}
	n.log.Warn("wipe order accepted: wiping this device", "signer", o.Signer)
	n.wipeOnce.Act(o, n.cfg.OnWipe)
	return true
}

// askAll asks every connected peer for orders naming this device (run each Config.WipeAsk). Asking
// on new connections alone would miss an order that reaches a peer (a relay, a member carrying it)
// after the connection began: a lost phone that stays connected to its clinic's relay would never
// learn of it.
func (n *Node) askAll() {
	n.wipeRounds.Run(n.host.Network().Peers(), func(f func()) { n.goRun(f) }, func(p peer.ID) {
		ctx, cancel := context.WithTimeout(n.ctx, wipeproto.Timeout)
		defer cancel()
		n.askWipe(ctx, p)
	})
}

// RemoteWipe removes a lost device from the team (as RemoveDevice, or RemoveMember for a person's only
// device: the team re-keys without it) and issues a wipe order for it, valid for lifetime (0:
// wipeorder.DefaultLifetime), which this node and then its relays and the members it meets carry until
// the device asks for it. A device removed from the team earlier (crdt.State.Removed) can be ordered
// wiped too: there is nothing to remove, so only the order is issued; nothing of the team reaches the
// device through it. Only an admin may. It returns the order.
func (n *Node) RemoteWipe(teamRef, device string, lifetime time.Duration) (*wipeorder.Order, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return nil, err
	}
	s := t.snapshot()
	me, ok := s.PersonOf(n.id.Device.ID())
	if !ok || !me.Admin {
		return nil, errors.New("node: only an admin can order a remote wipe")
	}
	dev, owner, err := findDevice(s, device)
	removed := false
	if err != nil {
		var rerr error
		if dev, rerr = findRemoved(s, device); rerr != nil {
			return nil, err
		}
		removed = true
	}
	if dev == n.id.Device.ID() {
		return nil, errors.New("node: this is the device you are using: wipe it with: fieldmesh wipe")
	}
	o, err := wipeorder.Issue(n.id.Device, dev, n.now(), lifetime, nil)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if !removed {
		// The device leaves as a lost device does (RemoveDevice), or, if it is its person's only one,
		// with its person (RemoveMember): either way the team re-keys without it.
		change := crdt.Change{Action: crdt.ActUnlink, Target: dev}
		if len(owner.Devices) == 1 {
			change = crdt.Change{Action: crdt.ActRemove, Target: owner.ID}
		}
		if _, err := n.change(t, change); err != nil {
			return nil, err
		}
	}
	if err := n.carryWipe(o); err != nil {
		return nil, fmt.Errorf("node: store the wipe order: %w", err)
	}
	n.record(audit.Event{Kind: audit.Wiped, Team: audit.Short(t.id[:]), Actor: audit.Short(dev[:])})
	n.log.Info("remote wipe ordered", "team", t.id, "target", dev)
	for _, p := range n.host.Network().Peers() {
		if d, err := deviceOf(p); err == nil && d != dev && (n.isRelay(p) || n.memberAnywhere(d)) {
			n.goRun(func() {
				ctx, cancel := context.WithTimeout(n.ctx, wipeproto.Timeout)
				defer cancel()
				if err := wipeproto.Offer(ctx, n.host, p, o); err != nil {
					n.log.Debug("wipe order not handed over", "peer", p.ShortString(), "err", err)
				}
			})
		}
	}
	return o, nil
}

// findRemoved finds, by id prefix, a device once a member of the team and removed since.
func findRemoved(s *crdt.State, ref string) (identity.DeviceID, error) {
	var dev identity.DeviceID
	found := 0
	for _, d := range s.Removed {
		if idPrefix(d, ref) {
			dev = d
			found++
		}
	}
	if found != 1 {
		return dev, fmt.Errorf("node: %q matches %d removed devices", ref, found)
	}
	return dev, nil
}

// WipeOrders returns the orders this node carries.
func (n *Node) WipeOrders() []*wipeorder.Order { return n.wipes.All(n.now()) }
