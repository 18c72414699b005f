package sim

import (
	"fmt"
	"math"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// Carry says which devices carry a team's sealed envelopes besides its
// members.
type Carry uint8

const (
	// CarryMembers: members carry only their teams' envelopes.
	CarryMembers Carry = iota
	// CarryRelays: clinic relays also carry every team enrolled with them.
	CarryRelays
	// CarryAnyone: any device carries any sealed envelope (epidemic).
	CarryAnyone
)

// Strategy is how devices hand envelopes on. The device core decides what
// a device accepts and keeps; the strategy decides what a device offers a
// peer in a reconciliation (its view of its store) and who carries what.
type Strategy struct {
	Name  string
	Carry Carry
	// Copies, if positive, limits hand-offs of a message to devices that are
	// not its recipients (binary spray-and-wait): its author holds Copies,
	// a device holding c > 1 gives half to a peer and keeps the rest, and a
	// device holding 1 gives it only to a recipient. 1 is direct delivery.
	Copies int
	// UrgentCopies and EmergencyCopies, if positive, replace Copies for
	// messages of those priorities (the author knows the priority; carriers
	// do not: they only pass the count on).
	UrgentCopies, EmergencyCopies int
	// Buffer, if positive, is the bytes of other teams' envelopes a device
	// carries: beyond it, the oldest carried envelope is dropped.
	Buffer int
	// Unrelayed, if positive, lets any device carry the sealed envelopes of
	// a team that enrolled no relay, copy-limited as Copies is with this
	// many copies (UrgentCopies and EmergencyCopies apply too), whatever
	// Carry says of other teams. A team with a relay leans on its relay; a
	// team in the field with none on its passers-by.
	Unrelayed int
}

// Strategies are the named strategies a scenario can compare.
func Strategies(copies, buffer int) map[string]Strategy {
	return map[string]Strategy{
		"members":   {Name: "members", Carry: CarryMembers},
		"relays":    {Name: "relays", Carry: CarryRelays},
		"epidemic":  {Name: "epidemic", Carry: CarryAnyone, Buffer: buffer},
		"spray":     {Name: "spray", Carry: CarryAnyone, Copies: copies, Buffer: buffer},
		"direct":    {Name: "direct", Carry: CarryMembers, Copies: 1},
		"fieldmesh": FieldmeshStrategy(buffer),
	}
}

// FieldmeshUnrelayed is the copies fieldmesh's strategy gives a message
// of a team that enrolled no relay (Strategy.Unrelayed): on the ONE's
// Helsinki trace, 4 copies deliver 0.957x epidemic's ratio and 6 cost
// 6.0% of its overhead; 5 meet the goal (0.986x, 4.9%, 0.96x the
// median latency). README, "Research: the simulator".
const FieldmeshUnrelayed = 5

// FieldmeshStrategy is the strategy fieldmesh would ship, from what the
// runs show (README, "Research: the simulator"):
//   - members carry their teams' envelopes, and clinic relays every team
//     enrolled, within a buffer and never past a message's TTL; other
//     devices carry nothing of a team with a relay. On the district
//     scenario, where every team has one, it delivers 0.99x epidemic's
//     ratio at a lower median latency, for a fifth of the bytes. Letting
//     every device carry copy-limited envelopes there (the first design)
//     gained nothing and cost six times epidemic's bytes, as reconciling
//     copy-limited views of a store costs the set reconciliation dearly.
//   - a team with no relay is carried by any device, binary
//     spray-and-wait with FieldmeshUnrelayed copies: without carriers, a
//     pair that rarely meets waits for that meeting (direct delivery:
//     about half epidemic's ratio on the ONE's traces).
//
// The node does the first half today: it takes envelopes only from
// members and enrolled relays. The second is what the runs recommend.
func FieldmeshStrategy(buffer int) Strategy {
	return Strategy{Name: "fieldmesh", Carry: CarryRelays, Unrelayed: FieldmeshUnrelayed, Buffer: buffer}
}

// StrategyNames lists the names Strategies knows, in table order.
var StrategyNames = []string{"members", "relays", "direct", "spray", "epidemic", "fieldmesh"}

func (s Strategy) check() error {
	if s.Copies < 0 || s.Unrelayed < 0 || s.Buffer < 0 || s.UrgentCopies < 0 || s.EmergencyCopies < 0 || s.Carry > CarryAnyone {
		return fmt.Errorf("strategy %q: copies, unrelayed, buffer and carry must be valid", s.Name)
	}
	if max(s.Copies, s.Unrelayed, s.UrgentCopies, s.EmergencyCopies) > MaxCopies {
		return fmt.Errorf("strategy %q: a copy limit above %d", s.Name, MaxCopies)
	}
	return nil
}

// MaxCopies is the largest copy limit a strategy may set (a holding keeps
// its copies in 32 bits); spray-and-wait's limits are a few dozen at most.
const MaxCopies = 1 << 20

// copiesFor is the copies an author holds of a message of priority p to
// a team whose copy limit is base (0: unlimited).
func (s Strategy) copiesFor(base int, p crdt.Priority) int {
	if base == 0 {
		return 0
	}
	switch {
	case p == crdt.Urgent && s.UrgentCopies > 0:
		return s.UrgentCopies
	case p == crdt.Emergency && s.EmergencyCopies > 0:
		return s.EmergencyCopies
	}
	return base
}

// unrelayed reports whether team ti is carried under Strategy.Unrelayed:
// the strategy sets it and the team enrolled no relay.
func (e *engine) unrelayed(ti int) bool {
	return e.cfg.Strategy.Unrelayed > 0 && len(e.cfg.Teams[ti].Relays) == 0
}

// teamCopies is team ti's copy limit under the strategy (0: none):
// Copies, or Unrelayed for a team that enrolled no relay.
func (e *engine) teamCopies(ti int) int {
	switch {
	case e.cfg.Strategy.Copies > 0:
		return e.cfg.Strategy.Copies
	case e.unrelayed(ti):
		return e.cfg.Strategy.Unrelayed
	}
	return 0
}

// anyoneCarries reports whether any device carries team ti's envelopes.
func (e *engine) anyoneCarries(ti int) bool {
	return e.cfg.Strategy.Carry >= CarryAnyone || e.unrelayed(ti)
}

// expired reports whether a workload message is past its TTL.
func (e *engine) expired(id crdt.OpID) bool {
	mi, ok := e.byID[id]
	if !ok {
		return false
	}
	m := e.msgs[mi]
	return m.TTL > 0 && e.now > m.Created+m.TTL
}

// viewFor is what x offers y of team ti in a reconciliation.
func (e *engine) viewFor(x, y *node, ti int, rx, ry role) *view {
	var st *store
	if rx == roleMember {
		st = x.teams[ti].store
	} else {
		st = x.carried[ti]
	}
	v := &view{}
	if st == nil {
		return v
	}
	v.envs = st.envs
	limited := e.teamCopies(ti) > 0
	if !limited {
		// Everything a member or carrier holds, past-TTL messages aside
		// when a carrier is on either side: the same items as the loop
		// below, without a copy per session.
		if rx == roleCarrier || ry == roleCarrier {
			v.items = e.liveItems(st)
		} else {
			v.items = st.snapshot()
		}
		return v
	}
	var want map[crdt.OpID]bool
	if limited && rx == roleMember {
		want = make(map[crdt.OpID]bool)
	}
	for _, it := range st.items {
		id := crdt.OpID(it.ID)
		if (rx == roleCarrier || ry == roleCarrier) && e.expired(id) {
			// Past its TTL a message is not carried: a member does not
			// offer it to a carrier (as a relay's horizon tells it).
			continue
		}
		if !limited || e.mayHand(x, y, ti, id, ry) {
			if want != nil {
				e.ancestors(x.teams[ti], id, want)
			} else {
				v.items = append(v.items, it)
			}
		}
	}
	if limited && rx == roleCarrier && len(v.items) > 0 {
		// A carrier cannot read parents: with anything it hands on it
		// hands the envelopes it was given as ancestors of the team's
		// messages, so the receiver can keep what it gets.
		v.items = v.items[:0:0]
		v.deps = make(map[crdt.OpID]bool)
		for _, it := range st.items {
			id := crdt.OpID(it.ID)
			if e.expired(id) {
				continue
			}
			if e.mayHand(x, y, ti, id, ry) {
				v.items = append(v.items, it)
			} else if h := x.held[id]; h != nil && h.dep {
				v.items = append(v.items, it)
				v.deps[id] = true
			}
		}
	}
	if want != nil {
		primary := make(map[crdt.OpID]bool)
		for _, it := range st.items {
			id := crdt.OpID(it.ID)
			if !(rx == roleCarrier && e.expired(id)) && e.mayHand(x, y, ti, id, ry) {
				primary[id] = true
			}
		}
		v.deps = make(map[crdt.OpID]bool)
		for _, it := range st.items {
			id := crdt.OpID(it.ID)
			if want[id] {
				v.items = append(v.items, it)
				if !primary[id] {
					v.deps[id] = true
				}
			}
		}
	}
	return v
}

// liveItems returns st's items that are not past their TTL, as a snapshot
// the store will not change, kept until the store changes or one of them
// expires.
func (e *engine) liveItems(st *store) []recon.Item {
	if st.liveOK && e.now <= st.liveUntil {
		return st.live
	}
	st.live, st.liveOK, st.liveUntil = nil, true, time.Duration(math.MaxInt64)
	for _, it := range st.items {
		id := crdt.OpID(it.ID)
		if e.expired(id) {
			continue
		}
		st.live = append(st.live, it)
		if mi, ok := e.byID[id]; ok && e.msgs[mi].TTL > 0 {
			st.liveUntil = min(st.liveUntil, e.msgs[mi].Created+e.msgs[mi].TTL)
		}
	}
	return st.live
}

// mayHand applies the copy limit to one envelope x holds.
func (e *engine) mayHand(x, y *node, ti int, id crdt.OpID, ry role) bool {
	mi, ok := e.byID[id]
	if !ok {
		// Membership, prekey and acknowledgement ops go to members freely;
		// a member hands them to a carrier only as the ancestors of a
		// message it hands on, and a carrier hands them on as copies.
		if ry == roleMember {
			return true
		}
		h := x.held[id]
		return !e.isMember(x, ti) && h != nil && h.copies > 1
	}
	m := e.msgs[mi]
	h := x.held[id]
	if h != nil && h.dep {
		return false
	}
	if m.isRecipient(y.idx) {
		return true
	}
	return h == nil || h.copies != 1
}

func (e *engine) isMember(n *node, ti int) bool {
	_, ok := n.teams[ti]
	return ok
}

// ancestors adds id and the ops it builds on that this member stores: a
// member can only keep an op whose parents it has, so a copy-limited
// hand-off brings them along (a carrier cannot read them, so the member
// that hands it the message adds them).
func (e *engine) ancestors(m *member, id crdt.OpID, want map[crdt.OpID]bool) {
	stack := []crdt.OpID{id}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if want[x] {
			continue
		}
		if _, ok := m.store.envs[x]; !ok {
			continue
		}
		want[x] = true
		if op, ok := m.team.Op(x); ok {
			stack = append(stack, op.Parents...)
		}
	}
}

// enforceBuffer drops n's oldest carried envelopes beyond the buffer.
func (e *engine) enforceBuffer(n *node) {
	limit := e.cfg.Strategy.Buffer
	if limit <= 0 {
		return
	}
	total := 0
	for _, st := range n.carried {
		total += st.bytes
	}
	for total > limit && len(n.carryQ) > 0 {
		r := n.carryQ[0]
		n.carryQ = n.carryQ[1:]
		st := n.carried[r.team]
		raw, ok := st.envs[r.id]
		if !ok {
			continue
		}
		total -= len(raw)
		e.dropCarried(n, r.team, r.id)
	}
}

func (e *engine) dropCarried(n *node, ti int, id crdt.OpID) {
	n.carried[ti].remove(id)
	delete(n.held, id)
	n.version++
	if mi, ok := e.byID[id]; ok {
		e.msgs[mi].Dropped++
		e.res.Dropped++
	}
}

// expireCarried drops carried messages past their TTL.
func (e *engine) expireCarried(n *node) {
	for _, ti := range sortedKeys(n.carried) {
		st := n.carried[ti]
		var gone []crdt.OpID
		for _, it := range st.items {
			if e.expired(it.ID) {
				gone = append(gone, it.ID)
			}
		}
		for _, id := range gone {
			e.dropCarried(n, ti, id)
		}
	}
	occ := 0
	for _, st := range n.carried {
		occ += st.bytes
	}
	n.stats.bufferSum += float64(occ)
	n.stats.bufferN++
	n.stats.BufferMax = max(n.stats.BufferMax, occ)
}
