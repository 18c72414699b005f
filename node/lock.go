package node

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Locking (node/session runs it): the node is closed, its cores' keys overwritten (WipeKeys) and the
// store closed; what the device needs while locked is only public: Sealed. Envelopes that arrive
// meanwhile are kept sealed by node/locked and given back at unlock (ReceiveSealed), where the new
// node's cores judge them as if they had just arrived.

// Sealed is what a locked device keeps of its node: no key, no content, no team name.
type Sealed struct {
	Device identity.DeviceID
	// Topics are the gossip topic names of the device's teams (one-way hashes of the team ids), by
	// the teams' envelope topics.
	Topics map[envelope.Topic]string
	// Members are the member devices of its teams, and Admins the admin devices among them, as this
	// device sees them.
	Members, Admins map[identity.DeviceID]bool
	// Dial are the peers to dial while locked: its relays, the peers it knows and those connected now.
	Dial []peer.AddrInfo
	// Relays are its relays' peer ids.
	Relays map[peer.ID]bool
	// Orders are the remote wipe orders it carries for other devices.
	Orders []*wipeorder.Order
	// LastContact is when it last reconciled with a member or relay of one of its teams (LastContact).
	LastContact time.Time
}

// Sealed returns what a locked device keeps.
func (n *Node) Sealed() Sealed {
	s := Sealed{Device: n.id.Device.ID(), Topics: map[envelope.Topic]string{}, Members: map[identity.DeviceID]bool{}, Admins: map[identity.DeviceID]bool{},
		Relays: map[peer.ID]bool{}, Orders: n.WipeOrders(), LastContact: n.LastContact()}
	for _, t := range n.teamList() {
		if t.removed() {
			continue
		}
		s.Topics[t.topic] = meshconf.TopicName(t.topic)
		for _, p := range t.snapshot().Persons {
			for _, d := range p.Devices {
				s.Members[d] = true
				if p.Admin {
					s.Admins[d] = true
				}
			}
		}
	}
	seen := map[peer.ID]bool{n.host.ID(): true}
	add := func(ai peer.AddrInfo) {
		if ai.ID == "" || seen[ai.ID] || len(ai.Addrs) == 0 {
			return
		}
		seen[ai.ID] = true
		s.Dial = append(s.Dial, ai)
	}
	for _, r := range n.Relays() {
		s.Relays[r.PeerID] = true
		add(peer.AddrInfo{ID: r.PeerID, Addrs: r.Addrs})
	}
	for _, p := range n.host.Network().Peers() {
		add(peer.AddrInfo{ID: p, Addrs: n.host.Peerstore().Addrs(p)})
	}
	if known, err := n.st.Peers(); err == nil {
		for k, b := range known {
			if strings.HasPrefix(k, relayForgottenPrefix) {
				continue
			}
			var ai peer.AddrInfo
			if json.Unmarshal(b, &ai) == nil {
				add(ai)
			}
		}
	}
	return s
}

// WipeKeys overwrites the keys held by every team's core (device.Team.Wipe) after Close: the node
// cannot open or seal anything afterwards. It returns an error, and wipes nothing, on a node that is
// still running.
func (n *Node) WipeKeys() error {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if !closed {
		return errors.New("node: close the node before wiping its keys")
	}
	for _, t := range n.teamList() {
		t.mu.Lock()
		t.core.Wipe()
		t.mu.Unlock()
	}
	return nil
}

// ReceiveSealed gives the team of a gossip topic an envelope that arrived from peer from while the
// device was locked: the core judges it as if it had just arrived (and, unlike gossip, nothing is
// passed on). An unknown topic is an error.
func (n *Node) ReceiveSealed(topic string, from peer.ID, raw []byte) error {
	v, ok := n.topicNames.Load(topic)
	if !ok {
		return fmt.Errorf("node: no team of this device has that topic")
	}
	_, err := n.receive(v.(*team), from, [][]byte{raw})
	return err
}

// LastContact returns when the node last completed a reconciliation with a peer (a member or relay of
// one of its teams), in this run or, as stored at the last Close, before it; zero if never.
func (n *Node) LastContact() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastContact
}

const settingLastContact = "last-contact"

func (n *Node) loadLastContact() {
	if b, err := n.st.Setting(settingLastContact); err == nil && len(b) == 8 {
		n.lastContact = time.Unix(int64(binary.BigEndian.Uint64(b)), 0)
	}
}

func (n *Node) storeLastContact() {
	last := n.LastContact()
	if last.IsZero() {
		return
	}
	if err := n.st.PutSetting(settingLastContact, binary.BigEndian.AppendUint64(nil, uint64(last.Unix()))); err != nil {
		n.log.Warn("storing the last contact time failed", "err", err)
	}
}

// TopicPeers returns the peers this node's gossip sees in the team's topic now.
func (n *Node) TopicPeers(teamRef string) ([]peer.ID, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return nil, err
	}
	return t.ptop.ListPeers(), nil
}
