package sim

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// store is what a simulated device holds of one topic: the envelopes of a
// member's team store (what its core's Writes ask to keep) or a carrier's
// store of sealed envelopes it cannot open. Items stay sorted by (Time, ID),
// as a recon Source lists them. A simulated device never restarts, so the
// store does not keep what a core's Writes ask to store only for its restart
// (opened ops, key state): its core holds those.
type store struct {
	items []recon.Item
	envs  map[crdt.OpID][]byte
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
	return &store{envs: make(map[crdt.OpID][]byte), in: in}
}

// interner keeps one copy of each envelope's bytes for all the simulated
// devices of a run: every member of a team, and every carrier, holds the
// same envelopes, each received as its own copy (a recon frame's). A store
// keeps the first copy the run met of an id instead of its own when the
// bytes are equal (other bytes under a known id keep their own). The stores
// and the cores read these bytes and never write them, so sharing changes
// nothing a device decides; it only stops the run holding the same bytes
// once per device.
type interner struct {
	envs map[crdt.OpID][]byte
}

func newInterner() *interner {
	return &interner{envs: make(map[crdt.OpID][]byte)}
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

// write keeps the envelopes of a core's Write.
func (s *store) write(w device.Write) {
	for _, r := range w.Envelopes {
		s.put(r.Time, r.ID, r.Data)
	}
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
