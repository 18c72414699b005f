package sim

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// store is what a simulated device holds of one topic: a member's team
// store (what its core's Writes ask to keep) or a carrier's store of sealed
// envelopes it cannot open. Items stay sorted by (Time, ID), as a recon
// Source lists them.
type store struct {
	items []recon.Item
	envs  map[crdt.OpID][]byte
	ops   map[crdt.OpID][]byte // a member's opened ops (a carrier has none)
	keys  []byte
	bytes int // envelope bytes held
	// shared says that a view holds items: the next change copies them
	// first (a session in flight keeps the snapshot it started with).
	shared bool
	// live caches liveItems: the items not past their TTL, valid while
	// the store is unchanged (liveOK) and until liveUntil, the earliest
	// TTL end among them.
	live      []recon.Item
	liveOK    bool
	liveUntil time.Duration
	in        *interner // nil: keep every copy as given
}

// snapshot returns the items for a view, which the store will not change.
func (s *store) snapshot() []recon.Item {
	s.shared = true
	return s.items
}

// changing is called before items change.
func (s *store) changing() {
	if s.shared {
		s.items = slices.Clone(s.items)
		s.shared = false
	}
	s.live, s.liveOK = nil, false
}

func newStore(in *interner) *store {
	return &store{envs: make(map[crdt.OpID][]byte), ops: make(map[crdt.OpID][]byte), in: in}
}

// interner keeps one copy of each envelope's bytes, and of each opened
// op's stored bytes, for all the simulated devices of a run: every member
// of a team, and every carrier, holds the same envelopes, each received as
// its own copy (a recon frame's). A store keeps the first copy the run
// met of an id instead of its own when the bytes are equal (a redacted op,
// or any other bytes under a known id, keeps its own). The stores and the
// cores read these bytes and never write them, so sharing changes nothing
// a device decides; it only stops the run holding the same bytes once per
// device.
type interner struct {
	envs, ops map[crdt.OpID][]byte
}

func newInterner() *interner {
	return &interner{envs: make(map[crdt.OpID][]byte), ops: make(map[crdt.OpID][]byte)}
}

// share returns the copy of b (stored under id in m) to keep.
func share(m map[crdt.OpID][]byte, id crdt.OpID, b []byte) []byte {
	x, ok := m[id]
	switch {
	case !ok:
		m[id] = b
	case bytes.Equal(x, b):
		return x
	}
	return b
}

func itemCmp(a, b recon.Item) int {
	if c := cmp.Compare(a.Time, b.Time); c != 0 {
		return c
	}
	return bytes.Compare(a.ID[:], b.ID[:])
}

// put stores one envelope; it reports whether it was new.
func (s *store) put(t uint64, id crdt.OpID, data []byte) bool {
	if _, ok := s.envs[id]; ok {
		return false
	}
	s.changing()
	it := recon.Item{Time: t, ID: id}
	i, _ := slices.BinarySearchFunc(s.items, it, itemCmp)
	s.items = slices.Insert(s.items, i, it)
	if s.in != nil {
		data = share(s.in.envs, id, data)
	}
	s.envs[id] = data
	s.bytes += len(data)
	return true
}

// putOp stores an opened op's bytes (a member's Write.Ops).
func (s *store) putOp(id crdt.OpID, data []byte) {
	if s.in != nil {
		data = share(s.in.ops, id, data)
	}
	s.ops[id] = data
}

// remove drops one envelope (a carrier's eviction).
func (s *store) remove(id crdt.OpID) {
	data, ok := s.envs[id]
	if !ok {
		return
	}
	s.changing()
	for i, it := range s.items {
		if it.ID == id {
			s.items = slices.Delete(s.items, i, i+1)
			break
		}
	}
	delete(s.envs, id)
	s.bytes -= len(data)
}

// write makes a core's Write durable.
func (s *store) write(w device.Write) {
	for _, r := range w.Envelopes {
		s.put(r.Time, r.ID, r.Data)
	}
	for _, r := range w.Ops {
		s.putOp(r.ID, r.Data)
	}
	if w.Keys != nil {
		s.keys = w.Keys
	}
}

// stored is what device.New restores a Team from.
func (s *store) stored() (device.Stored, error) {
	st := device.Stored{Keys: s.keys}
	for _, it := range s.items {
		if b, ok := s.ops[it.ID]; ok {
			st.Ops = append(st.Ops, b)
		}
	}
	for _, it := range s.items {
		raw := s.envs[it.ID]
		e, err := envelope.Unmarshal(envelope.Topic{}, raw) // only the header is read: the topic does not matter
		if err != nil {
			return st, fmt.Errorf("stored envelope: %w", err)
		}
		st.Envelopes = append(st.Envelopes, device.Ref{Time: it.Time, ID: it.ID, Epoch: e.Epoch})
		if e.Form() == envelope.FormCommit {
			st.Commits = append(st.Commits, raw)
		}
	}
	return st, nil
}

// view is the snapshot of a store one session offers a peer: the items a
// strategy lets this device hand that peer.
type view struct {
	items []recon.Item
	envs  map[crdt.OpID][]byte
	// deps are the items offered only as ancestors of offered messages
	// (copy-limited strategies): their receiver may not hand them on.
	deps map[crdt.OpID]bool
}

func (v *view) Items() ([]recon.Item, error) { return v.items, nil }

func (v *view) Envelope(id [recon.IDSize]byte) ([]byte, error) {
	b, ok := v.envs[crdt.OpID(id)]
	if !ok {
		return nil, fmt.Errorf("sim: no envelope %x", id[:4])
	}
	return b, nil
}
