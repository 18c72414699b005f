package device

import (
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// held is an envelope received and not yet judged.
type held struct {
	env  *envelope.Envelope
	raw  []byte
	from Peer
	at   time.Time // when it arrived
	seq  uint64    // arrival order, for eviction

	// chain form: the envelope opened without spending its key (nil until
	// it opens).
	chain *teamkeys.Opened
	// commit form: the commit opened (nil until it opens) and, if it was
	// opened through this device's box, the epoch it starts, derived but
	// not learned.
	commit *teamkeys.CommitOpened
	epoch  *teamkeys.Epoch
	// outer is the prior key of a held commit that opened this commit
	// envelope (nil: a key held, or its box, opened it): learned with it.
	outer *envelope.PriorKey
	// tried says its boxes were tried once and none opened: not again.
	tried bool
	// fruitless, for a chain envelope, is what this device held of its
	// epoch's tag when nothing opened it (nil: not tried, or something
	// did): it is tried again only once that changes (Team.reopenChain).
	fruitless *tagInputs
}

// op returns the opened op, or nil.
func (h *held) op() *crdt.Op {
	switch {
	case h.chain != nil:
		return h.chain.Op
	case h.commit != nil:
		return h.commit.Op
	}
	return nil
}

func (h *held) wipe() {
	if h.commit != nil {
		h.commit.Wipe()
	}
}

// pool holds envelopes until they can be judged, at most maxPending, for at
// most pendingTTL each.
type pool struct {
	items map[crdt.OpID]*held
	seq   uint64
}

func newPool() *pool { return &pool{items: make(map[crdt.OpID]*held)} }

func (p *pool) len() int { return len(p.items) }

func (p *pool) get(id crdt.OpID) *held { return p.items[id] }

// add holds h, dropping the oldest item if the pool is full; it returns the
// id dropped, if any.
func (p *pool) add(h *held) (dropped crdt.OpID, ok bool) {
	p.seq++
	h.seq = p.seq
	if len(p.items) >= maxPending {
		var oldest *held
		for _, x := range p.items {
			if oldest == nil || x.seq < oldest.seq {
				oldest = x
			}
		}
		dropped, ok = oldest.env.ID, true
		p.remove(dropped)
	}
	p.items[h.env.ID] = h
	return dropped, ok
}

// take removes id without wiping it: its holder keeps it (unlearned).
func (p *pool) take(id crdt.OpID) { delete(p.items, id) }

func (p *pool) remove(id crdt.OpID) {
	if h := p.items[id]; h != nil {
		h.wipe()
		delete(p.items, id)
	}
}

// sorted returns the items in arrival order.
func (p *pool) sorted() []*held {
	out := make([]*held, 0, len(p.items))
	for _, h := range p.items {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b *held) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return out
}

// expire drops the items older than pendingTTL and returns their ids.
func (p *pool) expire(now time.Time) []crdt.OpID {
	var gone []crdt.OpID
	for id, h := range p.items {
		if now.Sub(h.at) > pendingTTL {
			gone = append(gone, id)
		}
	}
	for _, id := range gone {
		p.remove(id)
	}
	return gone
}

// idSet is a bounded set of ids that forgets the oldest half when full.
type idSet struct {
	max      int
	cur, old map[crdt.OpID]struct{}
}

func newIDSet(max int) *idSet {
	return &idSet{max: max, cur: make(map[crdt.OpID]struct{})}
}

func (s *idSet) add(id crdt.OpID) {
	if len(s.cur) >= s.max/2 {
		s.old, s.cur = s.cur, make(map[crdt.OpID]struct{})
	}
	s.cur[id] = struct{}{}
}

func (s *idSet) has(id crdt.OpID) bool {
	if _, ok := s.cur[id]; ok {
		return true
	}
	_, ok := s.old[id]
	return ok
}

// peerState is what a peer may still cost this team, and what it did.
type peerState struct {
	boxes     float64   // box trials left
	refilled  time.Time // when boxes was last topped up
	faults    int       // peer faults in the current window
	since     time.Time // start of the fault window
	lastMiss  time.Time // last sync asked of it for an unknown epoch or missing parents
	banned    bool
	rejected  int // envelopes rejected in all (for tests and reports)
	boxTrials int // boxes tried in all
}

func (t *Team) peer(p Peer) *peerState {
	ps := t.peers[p.ID]
	if ps == nil {
		ps = &peerState{boxes: boxBurst, refilled: t.now, since: t.now}
		t.peers[p.ID] = ps
	}
	return ps
}

// boxTrials is what trial-opening e's boxes costs this device: each box
// with each key it holds (teamkeys.Keys.BoxKeyCount).
func (t *Team) boxTrials(e *envelope.Envelope) int { return e.Boxes() * t.keys.BoxKeyCount() }

// chargeBoxes takes n box trials from p's budget, refilled at boxBurst per
// boxRefill; it reports whether p may have them. An envelope that costs
// more than the whole burst (a 256-device commit tried with several
// prekeys) takes a full budget: it must still open, once per refill.
func (t *Team) chargeBoxes(p Peer, n int) bool {
	ps := t.peer(p)
	if el := t.now.Sub(ps.refilled); el > 0 {
		ps.boxes = min(boxBurst, ps.boxes+boxBurst*float64(el)/float64(boxRefill))
		ps.refilled = t.now
	}
	need := min(float64(n), boxBurst)
	if ps.boxes < need {
		return false
	}
	ps.boxes -= need
	ps.boxTrials += n
	return true
}

// fault records that p sent something an honest peer never passes on; it
// reports whether p is now to be banned. Relays are never banned for what
// they carry.
func (t *Team) fault(p Peer) bool {
	ps := t.peer(p)
	ps.rejected++
	if p.Relay || p.ID == "" {
		return false
	}
	if t.now.Sub(ps.since) > faultWindow {
		ps.faults, ps.since, ps.banned = 0, t.now, false
	}
	ps.faults++
	if ps.faults > maxFaults && !ps.banned {
		ps.banned = true
		return true
	}
	return false
}

// missed reports whether p may be asked to sync again because of an
// unknown epoch or missing parents, and records that it was.
func (t *Team) missed(p Peer) bool {
	if p.ID == "" {
		return false
	}
	ps := t.peer(p)
	if !ps.lastMiss.IsZero() && t.now.Sub(ps.lastMiss) < missWait {
		return false
	}
	ps.lastMiss = t.now
	return true
}

// PeerStats is what a peer cost this team and did.
type PeerStats struct {
	Rejected  int  // envelopes rejected
	BoxTrials int  // boxes tried for it
	Banned    bool // banned for sending invalid data
}

// PeerStats returns the statistics of the peer with this id.
func (t *Team) PeerStats(id string) PeerStats {
	ps := t.peers[id]
	if ps == nil {
		return PeerStats{}
	}
	return PeerStats{Rejected: ps.rejected, BoxTrials: ps.boxTrials, Banned: ps.banned}
}
