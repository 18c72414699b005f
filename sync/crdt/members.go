package crdt

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/safetext"
)

// This file resolves membership: which commits count, who is a member, and
// the key epochs. The rules are on Log.State and, with worked examples, in
// docs/membership.md.

// bitset is a set of epoch-op indices (see epochOp). A bitset shared
// between ops is never modified; nil is the empty set.
type bitset []uint64

func (b bitset) has(i int) bool {
	w := i >> 6
	return w < len(b) && b[w]&(1<<uint(i&63)) != 0
}

// with returns a copy of b, words long, with i added.
func (b bitset) with(i, words int) bitset {
	c := make(bitset, words)
	copy(c, b)
	c[i>>6] |= 1 << uint(i&63)
	return c
}

func (b bitset) set(i int) { b[i>>6] |= 1 << uint(i&63) }

// subsetOf reports whether every element of b is in o.
func (b bitset) subsetOf(o bitset) bool {
	for i, w := range b {
		var v uint64
		if i < len(o) {
			v = o[i]
		}
		if w&^v != 0 {
			return false
		}
	}
	return true
}

// union returns acc ∪ c. acc is modified only if owned (not shared); the
// result is owned if it is a new slice.
func union(acc bitset, owned bool, c bitset, words int) (bitset, bool) {
	switch {
	case c.subsetOf(acc):
		return acc, owned
	case !owned && acc.subsetOf(c):
		return c, false
	case !owned:
		n := make(bitset, words)
		copy(n, acc)
		acc, owned = n, true
	}
	for i, w := range c {
		acc[i] |= w
	}
	return acc, owned
}

// evKind is the kind of a membership event: what one change (or the
// genesis) does to one person or device.
type evKind uint8

const (
	evAdd     evKind = iota + 1 // subj: a new person, with its first device subj
	evRemove                    // subj: a person
	evPromote                   // subj: a person
	evLink                      // subj: a device, of person target
	evUnlink                    // subj: a device
)

type event struct {
	kind   evKind
	at     int // index of the epoch op that makes it
	subj   identity.DeviceID
	target identity.DeviceID // evLink: the person
	info   MemberInfo        // evAdd, evLink
}

// person returns the person a grant (evAdd or evLink) gives its device to.
func (e *event) person() identity.DeviceID {
	if e.kind == evLink {
		return e.target
	}
	return e.subj
}

// epochOp is the genesis (index 0) or a candidate commit: a KindMember op
// without impossible parents whose body decodes. Indices 1.. follow
// (Time, ID).
type epochOp struct {
	id   OpID
	op   *Op
	body Commit // zero for the genesis
	anc  bitset // the epoch ops among its strict causal ancestors
	evs  []event
	// The pass that judged the commit valid sets these: the author's
	// person in the state the commit applies to, and the persons and
	// devices it removes.
	fx effects
}

type effects struct {
	authorPerson identity.DeviceID
	removed      []identity.DeviceID // persons
	unlinked     []identity.DeviceID // devices unlinked, or of persons removed
}

// removes reports whether the commit removes a person or unlinks a device.
func (fx *effects) removes() bool { return len(fx.removed)+len(fx.unlinked) > 0 }

// before reports whether epoch op i comes before j by (Time, ID).
func before(ep []epochOp, i, j int) bool {
	return cmp.Or(cmp.Compare(ep[i].op.Time, ep[j].op.Time), ep[i].id.Compare(ep[j].id)) < 0
}

// concurrent reports whether neither of epoch ops i and j is a causal
// ancestor of the other.
func concurrent(ep []epochOp, i, j int) bool {
	return i != j && !ep[i].anc.has(j) && !ep[j].anc.has(i)
}

// mperson and mdevice are the state of one current person and device.
type mperson struct {
	name   string
	nameAt int // the epoch op of the add that names it
	admin  bool
}

type mdevice struct {
	person identity.DeviceID
	noise  identity.NoisePublic
	at     int    // the epoch op of the grant
	label  string // the name its link gave it (ActLink's Info.Name); empty for a person's first device
}

// mstate is a membership state: the persons present (each with at least
// one current device) and the current devices.
type mstate struct {
	persons map[identity.DeviceID]*mperson
	devices map[identity.DeviceID]mdevice
}

// subjEvents are the events about one id; removes and unlinks are epoch-op
// indices.
type subjEvents struct {
	adds, promotes, grants []*event
	removes, unlinks       []int
}

// build returns the membership state of the epoch ops whose indices are
// in set (a causally closed set of valid epoch ops, judged: their effects
// are known), looking only at the indices in changing (the epoch ops with
// changes).
//
// A person is present if some add of it supersedes every removal of it (has
// them all in its causal past): a removal beats a concurrent add. It is an
// admin if some admin add or promote of it does too; its name comes from
// the greatest such add by (Time, ID). A device is current if some grant of
// it (the add of the person it is the first device of, or a link) is to a
// present person and supersedes every removal of that person and every
// removal of the device: its unlinks, and the removals of a person it
// belonged to in the state the removal applied to. The greatest such grant
// by (Time, ID) gives its person and Noise key. Last, a person left with no
// current device is not present.
func build(ep []epochOp, changing []int, in func(int) bool) *mstate {
	subj := make(map[identity.DeviceID]*subjEvents)
	get := func(d identity.DeviceID) *subjEvents {
		s := subj[d]
		if s == nil {
			s = new(subjEvents)
			subj[d] = s
		}
		return s
	}
	for _, i := range changing {
		if !in(i) {
			continue
		}
		for k := range ep[i].evs {
			e := &ep[i].evs[k]
			s := get(e.subj)
			switch e.kind {
			case evAdd:
				s.adds = append(s.adds, e)
				s.grants = append(s.grants, e)
			case evRemove:
				s.removes = append(s.removes, i)
			case evPromote:
				s.promotes = append(s.promotes, e)
			case evLink:
				s.grants = append(s.grants, e)
			}
		}
		for _, d := range ep[i].fx.unlinked {
			s := get(d)
			s.unlinks = append(s.unlinks, i)
		}
	}
	supersedes := func(e *event, rs []int) bool {
		for _, r := range rs {
			if !ep[e.at].anc.has(r) {
				return false
			}
		}
		return true
	}
	st := &mstate{persons: make(map[identity.DeviceID]*mperson), devices: make(map[identity.DeviceID]mdevice)}
	for id, s := range subj {
		var p *mperson
		for _, a := range s.adds {
			if !supersedes(a, s.removes) {
				continue
			}
			if p == nil {
				p = &mperson{name: a.info.Name, nameAt: a.at}
			} else if before(ep, p.nameAt, a.at) {
				p.name, p.nameAt = a.info.Name, a.at
			}
			p.admin = p.admin || a.info.Admin
		}
		if p == nil {
			continue
		}
		for _, pr := range s.promotes {
			p.admin = p.admin || supersedes(pr, s.removes)
		}
		st.persons[id] = p
	}
	for id, s := range subj {
		best := -1
		var dev mdevice
		for _, g := range s.grants {
			to := g.person()
			if st.persons[to] == nil || !supersedes(g, subj[to].removes) || !supersedes(g, s.unlinks) {
				continue
			}
			if best < 0 || before(ep, best, g.at) {
				best = g.at
				dev = mdevice{person: to, noise: g.info.Noise, at: g.at}
				if g.kind == evLink {
					dev.label = g.info.Name
				}
			}
		}
		if best >= 0 {
			st.devices[id] = dev
		}
	}
	st.dropEmpty()
	return st
}

// dropEmpty removes the persons with no current device: a person whose
// devices are all unlinked is no longer present (it can be added again).
func (st *mstate) dropEmpty() {
	has := make(map[identity.DeviceID]bool, len(st.persons))
	for _, dv := range st.devices {
		has[dv.person] = true
	}
	for id := range st.persons {
		if !has[id] {
			delete(st.persons, id)
		}
	}
}

// apply applies changes made by author to st, in order, recording their
// effects in fx. It returns an error (and leaves st half changed) if a
// change is not permitted: the author must be a current device before each
// change; add, remove and promote need its person to be an admin; link and
// unlink need an admin or the person the device belongs to; and each change
// must change something (add and link a device that is not current and not
// a present person's id, to a present person; remove and promote a present
// person, promote one that is not an admin; unlink a current device).
func (st *mstate) apply(author identity.DeviceID, changes []Change, fx *effects) error {
	ad, ok := st.devices[author]
	if !ok {
		return fmt.Errorf("%w: device %s is not a member", ErrInvalid, author.Short())
	}
	*fx = effects{authorPerson: ad.person}
	for _, ch := range changes {
		ad, ok := st.devices[author]
		if !ok {
			return fmt.Errorf("%w: device %s is no longer a member", ErrInvalid, author.Short())
		}
		admin := st.persons[ad.person].admin
		needAdmin := func() error {
			if !admin {
				return fmt.Errorf("%w: %v needs an admin", ErrInvalid, ch.Action)
			}
			return nil
		}
		fresh := func(d identity.DeviceID) error {
			if _, ok := st.devices[d]; ok || st.persons[d] != nil {
				return fmt.Errorf("%w: %v of device %s, already a member", ErrInvalid, ch.Action, d.Short())
			}
			if !noiseOK(ch.Info.Noise) {
				return fmt.Errorf("%w: %v of device %s with a Noise key of small order", ErrInvalid, ch.Action, d.Short())
			}
			return nil
		}
		present := func(p identity.DeviceID) error {
			if st.persons[p] == nil {
				return fmt.Errorf("%w: %v of %s, not a member", ErrInvalid, ch.Action, p.Short())
			}
			return nil
		}
		var err error
		switch ch.Action {
		case ActAdd:
			if err = cmp.Or(needAdmin(), fresh(ch.Info.Device)); err == nil {
				st.persons[ch.Info.Device] = &mperson{name: ch.Info.Name, admin: ch.Info.Admin}
				st.devices[ch.Info.Device] = mdevice{person: ch.Info.Device, noise: ch.Info.Noise}
			}
		case ActRemove:
			if err = cmp.Or(needAdmin(), present(ch.Target)); err == nil {
				delete(st.persons, ch.Target)
				var gone []identity.DeviceID
				for d, dv := range st.devices {
					if dv.person == ch.Target {
						gone = append(gone, d)
					}
				}
				slices.SortFunc(gone, compareDevice)
				for _, d := range gone {
					delete(st.devices, d)
				}
				fx.removed = append(fx.removed, ch.Target)
				fx.unlinked = append(fx.unlinked, gone...)
			}
		case ActPromote:
			if err = cmp.Or(needAdmin(), present(ch.Target)); err == nil {
				if st.persons[ch.Target].admin {
					err = fmt.Errorf("%w: promote of %s, already an admin", ErrInvalid, ch.Target.Short())
				} else {
					st.persons[ch.Target].admin = true
				}
			}
		case ActLink:
			if err = cmp.Or(present(ch.Target), fresh(ch.Info.Device)); err == nil && !admin && ad.person != ch.Target {
				err = fmt.Errorf("%w: link to another person needs an admin", ErrInvalid)
			}
			if err == nil {
				st.devices[ch.Info.Device] = mdevice{person: ch.Target, noise: ch.Info.Noise, label: ch.Info.Name}
			}
		case ActUnlink:
			dv, ok := st.devices[ch.Target]
			switch {
			case !ok:
				err = fmt.Errorf("%w: unlink of %s, not a member device", ErrInvalid, ch.Target.Short())
			case !admin && dv.person != ad.person:
				err = fmt.Errorf("%w: unlink of another person's device needs an admin", ErrInvalid)
			default:
				delete(st.devices, ch.Target)
				fx.unlinked = append(fx.unlinked, ch.Target)
				st.dropEmpty()
			}
		default:
			err = fmt.Errorf("%w: member action %d", ErrInvalid, uint8(ch.Action))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// cuts reports whether valid commit r, which removes persons or devices,
// cuts commit c: c is concurrent with r and its author is a device r
// unlinks, or of a person r removes.
func cuts(ep []epochOp, r, c int) bool {
	fr, fc := &ep[r].fx, &ep[c].fx
	return concurrent(ep, r, c) &&
		(slices.Contains(fr.removed, fc.authorPerson) || slices.Contains(fr.unlinked, ep[c].op.Author))
}

// resolve returns the set of valid epoch ops (the genesis always). order
// lists the commits (indices 1..) in a linear extension of causality;
// changing lists the epoch ops with events.
//
// A pass (judge) judges the commits in order, given a set of cut commits.
// A removal is cut only by an earlier valid removal, in the pass; a commit
// without removals is also cut by a later concurrent valid removal, which
// the pass cannot see: such cuts are added to the cut set between passes,
// one removal at a time, the earliest valid removal with valid victims
// first (its cuts). Cutting commits can change the validity of commits
// judged after them, so the cuts of removal r stand only if, in the pass
// with them, r and every removal whose cuts were added before are still
// valid: only valid commits cut. If not, r is defeated: its cuts would undo
// what it, or a removal whose cuts stand, relies on. A defeated removal is
// cut for good and the judgement starts over from the defeated removals
// alone. It ends with the first pass in which no valid removal has an
// uncut valid victim. Each step adds a commit to the cut set or a removal
// to the defeated ones, so there are O(n²) passes for n commits
// (in practice one or two).
func resolve(ep []epochOp, order, changing []int, words int) bitset {
	defeated := make(bitset, words)
	for {
		cut := slices.Clone(defeated)
		var cutters []int // the removals whose cuts are in cut
		valid := judge(ep, order, changing, cut, words)
		for {
			r, victims := nextCutter(ep, order, valid, cut)
			if r < 0 {
				return valid
			}
			trial := slices.Clone(cut)
			for _, i := range victims {
				trial.set(i)
			}
			tv := judge(ep, order, changing, trial, words)
			if !tv.has(r) || slices.ContainsFunc(cutters, func(c int) bool { return !tv.has(c) }) {
				defeated.set(r)
				break
			}
			cut, valid = trial, tv
			cutters = append(cutters, r)
		}
	}
}

// judge is one pass of resolve: it returns the valid epoch ops given the
// cut commits, and sets the effects (fx) of the commits it finds
// permitted. A commit is valid if it is not cut, descends from the
// genesis, has a Number greater than that of every valid epoch in its
// causal past, its changes are permitted (apply) in the state of the valid
// commits in its causal past, and no valid removal earlier in the order
// cuts it.
func judge(ep []epochOp, order, changing []int, cut bitset, words int) bitset {
	valid := make(bitset, words)
	valid.set(0)
	var removers []int
	for _, i := range order {
		e := &ep[i]
		if cut.has(i) || !e.anc.has(0) || e.body.Number <= maxNumber(ep, e.anc, valid) {
			continue
		}
		st := build(ep, changing, func(j int) bool { return valid.has(j) && e.anc.has(j) })
		if st.apply(e.op.Author, e.body.Changes, &e.fx) != nil {
			continue
		}
		if slices.ContainsFunc(removers, func(r int) bool { return cuts(ep, r, i) }) {
			continue
		}
		valid.set(i)
		if e.fx.removes() {
			removers = append(removers, i)
		}
	}
	return valid
}

// nextCutter returns the first removal in order, valid in the pass that
// gave valid, that cuts valid commits without removals not yet in cut (its
// victims, all before it in order: judge cut the later ones), and those
// victims; -1 if there is none.
func nextCutter(ep []epochOp, order []int, valid, cut bitset) (int, []int) {
	for _, r := range order {
		if !valid.has(r) || !ep[r].fx.removes() {
			continue
		}
		var victims []int
		for _, i := range order {
			if valid.has(i) && !cut.has(i) && !ep[i].fx.removes() && cuts(ep, r, i) {
				victims = append(victims, i)
			}
		}
		if len(victims) > 0 {
			return r, victims
		}
	}
	return -1, nil
}

// maxNumber returns the greatest Number of the epoch ops in both a and
// valid (the genesis counts 1).
func maxNumber(ep []epochOp, a, valid bitset) uint32 {
	var n uint32
	for w := range min(len(a), len(valid)) {
		for x := a[w] & valid[w]; x != 0; x &= x - 1 {
			i := w<<6 | bits.TrailingZeros64(x)
			if i == 0 {
				n = max(n, 1)
			} else {
				n = max(n, ep[i].body.Number)
			}
		}
	}
	return n
}

// linearOrder returns the commits 1..len(ep)-1 in (Time, ID) order, except
// that none comes before a causal ancestor: the least by (Time, ID) whose
// ancestors are all placed comes next. With possible parents only, times
// grow along parents, so this is (Time, ID) order unless a chain of
// ancestors passes through an op with an impossible parent.
func linearOrder(ep []epochOp, words int) []int {
	order := make([]int, 0, len(ep)-1)
	ok := true
	for i := 1; i < len(ep); i++ {
		order = append(order, i)
		for w := len(ep[i].anc) - 1; w >= 0; w-- {
			if x := ep[i].anc[w]; x != 0 {
				ok = ok && w<<6|(63-bits.LeadingZeros64(x)) < i
				break
			}
		}
	}
	if ok {
		return order
	}
	placed := make(bitset, words)
	placed.set(0)
	order = order[:0]
	for len(order) < len(ep)-1 {
		next := -1
		for i := 1; i < len(ep) && next < 0; i++ {
			if !placed.has(i) && ep[i].anc.subsetOf(placed) {
				next = i
			}
		}
		if next < 0 { // a cycle: only a SHA-256 collision makes one
			for i := 1; i < len(ep); i++ {
				if !placed.has(i) {
					next = i
					break
				}
			}
		}
		placed.set(next)
		order = append(order, next)
	}
	return order
}

// ancestry returns, for every op of the log, the set of epoch ops (by
// index) among its causal ancestors in the log. Ops share the sets they
// have in common, so this costs one pass over the DAG plus a set per
// commit and per merge of differing histories.
func (l *Log) ancestry(index map[OpID]int, words int) map[OpID]bitset {
	anc := make(map[OpID]bitset, len(l.ops))
	incl := make(map[OpID]bitset, len(index)) // an epoch op's set with itself
	for _, id := range l.postOrder() {
		var acc bitset
		owned := false
		for _, p := range l.ops[id].Parents {
			c, ok := incl[p]
			if !ok {
				c = anc[p] // nil for a parent the log does not hold
			}
			acc, owned = union(acc, owned, c, words)
		}
		if acc != nil {
			anc[id] = acc
		}
		if i, ok := index[id]; ok {
			incl[id] = acc.with(i, words)
		}
	}
	return anc
}

// postOrder lists the log's ops so that every op comes after the parents
// the log holds (a depth-first post-order over parents; a parent on the
// current path, which only a hash collision could make, is skipped).
func (l *Log) postOrder() []OpID {
	order := make([]OpID, 0, len(l.ops))
	const (
		unvisited = iota
		visiting
		visited
	)
	state := make(map[OpID]uint8, len(l.ops))
	type frame struct {
		id   OpID
		next int
	}
	var stack []frame
	for id := range l.ops {
		if state[id] != unvisited {
			continue
		}
		state[id] = visiting
		stack = append(stack[:0], frame{id: id})
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			ps := l.ops[f.id].Parents
			if f.next < len(ps) {
				p := ps[f.next]
				f.next++
				if _, ok := l.ops[p]; ok && state[p] == unvisited {
					state[p] = visiting
					stack = append(stack, frame{id: p})
				}
				continue
			}
			state[f.id] = visited
			order = append(order, f.id)
			stack = stack[:len(stack)-1]
		}
	}
	return order
}

// membership is the resolved membership of a log.
type membership struct {
	persons []Person
	members []MemberInfo
	removed []identity.DeviceID
	epochs  []EpochView
	current int
	// detached says that a valid epoch other than the current one lies
	// outside the current one's causal past and lists fewer devices: see
	// State.NeedsRekey.
	detached bool
	// valid and permitted hold the ids of the valid commits (the genesis
	// included) and of the permitted ones (see State.Permitted).
	valid, permitted map[OpID]bool
	// removalsOf returns the valid removals of a device (epoch-op indices
	// into ep), unlinkedBy the devices a valid removal takes out.
	ep         []epochOp
	anc        map[OpID]bitset
	removalsOf func(d identity.DeviceID) []int
	// removals says that some device has a valid removal.
	removals bool
	// counts reports whether a message or ack by author, with the given
	// causal ancestors, counts.
	counts func(id OpID, author identity.DeviceID) bool
	// name returns the display name of a device that was ever added.
	name func(d identity.DeviceID) string
}

// members resolves the membership of the log given its genesis. bad holds
// the ops with impossible parents.
func (l *Log) members(bad map[OpID]bool, genesis add) membership {
	ep := []epochOp{{id: genesis.id, op: genesis.op, evs: []event{{kind: evAdd, subj: genesis.info.Device, info: genesis.info}}}}
	ep[0].evs[0].info.Admin = true
	for id, op := range l.ops {
		if op.Kind != KindMember || bad[id] {
			continue
		}
		c, err := UnmarshalCommit(op.Body)
		if err != nil {
			continue
		}
		ep = append(ep, epochOp{id: id, op: op, body: c})
	}
	slices.SortFunc(ep[1:], func(a, b epochOp) int {
		return cmp.Or(cmp.Compare(a.op.Time, b.op.Time), a.id.Compare(b.id))
	})
	words := (len(ep) + 63) / 64
	var changing []int
	changing = append(changing, 0)
	for i := 1; i < len(ep); i++ {
		e := &ep[i]
		for _, ch := range e.body.Changes {
			ev := event{at: i, subj: ch.subject(), info: ch.Info}
			switch ch.Action {
			case ActAdd:
				ev.kind = evAdd
			case ActRemove:
				ev.kind = evRemove
			case ActPromote:
				ev.kind = evPromote
			case ActLink:
				ev.kind, ev.target = evLink, ch.Target
			case ActUnlink:
				ev.kind = evUnlink
			}
			e.evs = append(e.evs, ev)
		}
		if len(e.evs) > 0 {
			changing = append(changing, i)
		}
	}

	var anc map[OpID]bitset
	valid := bitset{1}
	if len(ep) > 1 {
		index := make(map[OpID]int, len(ep))
		for i := range ep {
			index[ep[i].id] = i
		}
		anc = l.ancestry(index, words)
		for i := range ep {
			ep[i].anc = anc[ep[i].id]
		}
		valid = resolve(ep, linearOrder(ep, words), changing, words)
	}
	st := build(ep, changing, valid.has)

	// Every valid grant and removal, per device.
	grants := make(map[identity.DeviceID][]*event)   // by device
	grantsTo := make(map[identity.DeviceID][]*event) // by person
	for _, i := range changing {
		if !valid.has(i) {
			continue
		}
		for k := range ep[i].evs {
			if e := &ep[i].evs[k]; e.kind == evAdd || e.kind == evLink {
				grants[e.subj] = append(grants[e.subj], e)
				grantsTo[e.person()] = append(grantsTo[e.person()], e)
			}
		}
	}
	removals := make(map[identity.DeviceID][]int) // by device
	for _, i := range changing {
		if !valid.has(i) {
			continue
		}
		for _, d := range ep[i].fx.unlinked {
			removals[d] = append(removals[d], i)
		}
		for _, p := range ep[i].fx.removed {
			for _, g := range grantsTo[p] {
				if !slices.Contains(removals[g.subj], i) {
					removals[g.subj] = append(removals[g.subj], i)
				}
			}
		}
	}

	var m membership
	m.current = -1
	m.ep, m.anc = ep, anc
	m.removalsOf = func(d identity.DeviceID) []int { return removals[d] }
	m.removals = len(removals) > 0
	m.valid, m.permitted = make(map[OpID]bool), make(map[OpID]bool)
	for i := range ep {
		if valid.has(i) {
			m.valid[ep[i].id] = true
			m.permitted[ep[i].id] = true
		} else if i > 0 && permitted(ep, changing, valid, i) {
			m.permitted[ep[i].id] = true
		}
	}

	// Persons with a current device, with unique display names.
	devicesOf := make(map[identity.DeviceID][]identity.DeviceID)
	for d, dv := range st.devices {
		devicesOf[dv.person] = append(devicesOf[dv.person], d)
	}
	for id, ds := range devicesOf {
		slices.SortFunc(ds, compareDevice)
		p := st.persons[id]
		m.persons = append(m.persons, Person{ID: id, Name: p.name, Admin: p.admin, Devices: ds})
	}
	slices.SortFunc(m.persons, func(a, b Person) int {
		ia, ib := st.persons[a.ID].nameAt, st.persons[b.ID].nameAt
		if ia == ib {
			return compareDevice(a.ID, b.ID)
		}
		if before(ep, ia, ib) {
			return -1
		}
		return 1
	})
	taken := make(map[string]bool, len(m.persons))
	for i := range m.persons {
		p := &m.persons[i]
		p.Name = uniqueName(p.Name, p.ID, taken)
		taken[safetext.Skeleton(p.Name)] = true
	}
	slices.SortFunc(m.persons, func(a, b Person) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), compareDevice(a.ID, b.ID))
	})
	personIdx := make(map[identity.DeviceID]int, len(m.persons))
	for i, p := range m.persons {
		personIdx[p.ID] = i
	}

	// Members, and the recipients a sound epoch has.
	want := make([]Recipient, 0, len(st.devices))
	for d, dv := range st.devices {
		p := m.persons[personIdx[dv.person]]
		m.members = append(m.members, MemberInfo{Device: d, Noise: dv.noise, Name: p.Name, Admin: p.Admin, Label: dv.label})
		want = append(want, Recipient{Device: d, Noise: dv.noise})
	}
	slices.SortFunc(m.members, func(a, b MemberInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), compareDevice(a.Device, b.Device))
	})
	slices.SortFunc(want, func(a, b Recipient) int { return compareDevice(a.Device, b.Device) })

	for d := range grants {
		if _, ok := st.devices[d]; !ok {
			m.removed = append(m.removed, d)
		}
	}
	slices.SortFunc(m.removed, compareDevice)

	// Epochs.
	epIndex := make(map[OpID]int)
	for i := range ep {
		if !valid.has(i) {
			continue
		}
		e := &ep[i]
		v := EpochView{ID: e.id, Tag: TagOf(e.id), Number: e.body.Number, Author: e.op.Author, Time: e.op.Time,
			Recipients: slices.Clone(e.body.Recipients)}
		if i == 0 {
			v.Number = 1
			v.Recipients = []Recipient{{Device: genesis.info.Device, Noise: genesis.info.Noise}}
		}
		v.Sound = slices.Equal(v.Recipients, want)
		m.epochs = append(m.epochs, v)
		epIndex[e.id] = i
	}
	slices.SortFunc(m.epochs, func(a, b EpochView) int {
		return cmp.Or(cmp.Compare(a.Number, b.Number), cmp.Compare(a.Time, b.Time), a.ID.Compare(b.ID))
	})
	for i, e := range m.epochs {
		if e.Sound {
			m.current = i
		}
	}
	if m.current >= 0 {
		cur := m.epochs[m.current]
		ci := epIndex[cur.ID]
		for _, e := range m.epochs {
			j := epIndex[e.ID]
			if j == ci || ep[ci].anc.has(j) {
				continue
			}
			// e is not in the current epoch's causal past: the current commit did not hand its
			// outer key on. A recipient of the current epoch that is not one of e's may not be
			// able to read e's commit.
			for _, r := range cur.Recipients {
				if !slices.ContainsFunc(e.Recipients, func(x Recipient) bool { return x.Device == r.Device }) {
					m.detached = true
					break
				}
			}
		}
	}

	m.counts = func(id OpID, author identity.DeviceID) bool {
		gs := grants[author]
		if len(gs) == 0 {
			return false
		}
		a := anc[id]
		for _, r := range removals[author] {
			if a.has(r) && !slices.ContainsFunc(gs, func(g *event) bool { return a.has(g.at) && ep[g.at].anc.has(r) }) {
				return false
			}
		}
		return true
	}

	// Names: a current device's person's display name; for a removed
	// device, the last name of the person of its last grant, marked with
	// the person's short id if a current person shows that name.
	m.name = func(d identity.DeviceID) string {
		if dv, ok := st.devices[d]; ok {
			return m.persons[personIdx[dv.person]].Name
		}
		var last *event
		for _, g := range grants[d] {
			if last == nil || before(ep, last.at, g.at) {
				last = g
			}
		}
		if last == nil {
			return ""
		}
		p := last.person()
		if i, ok := personIdx[p]; ok {
			return m.persons[i].Name
		}
		var name *event
		for _, g := range grantsTo[p] {
			if g.kind == evAdd && (name == nil || before(ep, name.at, g.at)) {
				name = g
			}
		}
		if name == nil {
			return ""
		}
		return uniqueName(name.info.Name, p, taken)
	}
	return m
}

// permitted reports whether commit i, which is not valid, was permitted in
// its author's view: it descends from the genesis, its Number is greater than
// that of every valid epoch in its causal past, and its changes apply in the
// membership of the valid commits there. A permitted commit that is not
// valid was cut by a concurrent removal (rule 3) or by a removal that
// invalidates a commit in its causal past.
func permitted(ep []epochOp, changing []int, valid bitset, i int) bool {
	e := &ep[i]
	if !e.anc.has(0) || e.body.Number <= maxNumber(ep, e.anc, valid) {
		return false
	}
	st := build(ep, changing, func(j int) bool { return valid.has(j) && e.anc.has(j) })
	var fx effects
	return st.apply(e.op.Author, e.body.Changes, &fx) == nil
}

// noiseOK reports whether k is not of small order (identity.NoisePublic.Check),
// remembering the answers: the rules check every key a commit adds, each
// time a state is computed.
func noiseOK(k identity.NoisePublic) bool {
	noiseMemo.mu.Lock()
	ok, seen := noiseMemo.m[k]
	noiseMemo.mu.Unlock()
	if seen {
		return ok
	}
	ok = k.Check() == nil
	noiseMemo.mu.Lock()
	defer noiseMemo.mu.Unlock()
	if noiseMemo.m == nil || len(noiseMemo.m) >= 1<<14 {
		noiseMemo.m = make(map[identity.NoisePublic]bool)
	}
	noiseMemo.m[k] = ok
	return ok
}

var noiseMemo struct {
	mu sync.Mutex
	m  map[identity.NoisePublic]bool
}

// uniqueName returns name if no name in taken looks like it (taken holds
// skeletons: safetext.Skeleton), else name with the person's short id,
// "Name (abcd1234)", else with its full id (longer than MaxNameLen, so no
// member's own name). So "Ward A" and "Wаrd А" (Cyrillic) show apart.
func uniqueName(name string, id identity.DeviceID, taken map[string]bool) string {
	if !taken[safetext.Skeleton(name)] {
		return name
	}
	if n := name + " (" + id.Short() + ")"; !taken[safetext.Skeleton(n)] {
		return n
	}
	return name + " (" + hex.EncodeToString(id[:]) + ")"
}

// NextCommit returns the Commit by which device author makes changes (none:
// a re-key) to the team as s shows it: epoch Number one more than the
// greatest in s (at least 2), and as Recipients the member devices left
// after the changes, with their Noise keys. It returns an error wrapping
// ErrInvalid if s has no genesis or a change is not permitted to author by
// the rules of Log.State, or the error of Commit.Validate.
//
// The commit counts if its op names as parents every op s was computed
// from (see Log.HeadsBefore: s must not include ops from a clock too far
// ahead to be named) and no concurrent removal cuts it.
func (s State) NextCommit(author identity.DeviceID, changes ...Change) (Commit, error) {
	if len(s.Epochs) == 0 {
		return Commit{}, fmt.Errorf("%w: no team", ErrInvalid)
	}
	st := &mstate{persons: make(map[identity.DeviceID]*mperson, len(s.Persons)), devices: make(map[identity.DeviceID]mdevice, len(s.Members))}
	for _, p := range s.Persons {
		st.persons[p.ID] = &mperson{name: p.Name, admin: p.Admin}
		for _, d := range p.Devices {
			st.devices[d] = mdevice{person: p.ID}
		}
	}
	for _, m := range s.Members {
		if dv, ok := st.devices[m.Device]; ok {
			dv.noise, dv.label = m.Noise, m.Label
			st.devices[m.Device] = dv
		}
	}
	c := Commit{Number: max(s.Epochs[len(s.Epochs)-1].Number, 1) + 1, Changes: slices.Clone(changes)}
	if c.Number == 0 {
		return Commit{}, fmt.Errorf("%w: epoch numbers exhausted", ErrInvalid)
	}
	if err := st.apply(author, c.Changes, new(effects)); err != nil {
		return Commit{}, err
	}
	for d, dv := range st.devices {
		c.Recipients = append(c.Recipients, Recipient{Device: d, Noise: dv.noise})
	}
	slices.SortFunc(c.Recipients, func(a, b Recipient) int { return compareDevice(a.Device, b.Device) })
	if len(c.Changes) == 0 {
		c.Changes = nil
	}
	if err := c.Validate(); err != nil {
		return Commit{}, err
	}
	return c, nil
}
