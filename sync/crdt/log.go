package crdt

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// ErrWrongTeam is returned by Log.Add for an op of another team.
var ErrWrongTeam = errors.New("crdt: op belongs to another team")

// Log is the set of ops of one team. Its State is a pure function of that
// set: replicas that hold the same ops show the same state, whatever order
// the ops were added in. A Log is not safe for concurrent use.
type Log struct {
	team TeamID
	ops  map[OpID]*Op
	// parented holds every id named as a parent by an op in ops (present
	// or not), for Heads.
	parented map[OpID]struct{}
	// state caches State(); nil after an Add.
	state *State
}

// NewLog returns an empty log of team.
func NewLog(team TeamID) *Log {
	return &Log{team: team, ops: make(map[OpID]*Op), parented: make(map[OpID]struct{})}
}

// Team returns the log's team id.
func (l *Log) Team() TeamID { return l.team }

// Add adds a copy of op to the log. It checks that the op is of the log's
// team (ErrWrongTeam), well formed and signed by its author (see Op.Verify).
// Adding an op already in the log returns false, nil. Ops whose body does not
// decode, or whose author may not make them, are kept (they are part of the
// set and may be relayed) but do not show in State.
func (l *Log) Add(op *Op) (added bool, err error) {
	if op.Team != l.team {
		return false, fmt.Errorf("%w: op team %s, log team %s", ErrWrongTeam, op.Team.Short(), l.team.Short())
	}
	if err := op.Verify(); err != nil {
		return false, err
	}
	id := op.ID()
	if _, ok := l.ops[id]; ok {
		return false, nil
	}
	op = op.Clone()
	l.ops[id] = op
	for _, p := range op.Parents {
		l.parented[p] = struct{}{}
	}
	l.state = nil
	return true, nil
}

// Has reports whether the op with the given id is in the log.
func (l *Log) Has(id OpID) bool {
	_, ok := l.ops[id]
	return ok
}

// Op returns a copy of the op with the given id.
func (l *Log) Op(id OpID) (*Op, bool) {
	op, ok := l.ops[id]
	if !ok {
		return nil, false
	}
	return op.Clone(), true
}

// Ops returns copies of all ops, sorted by (Time, ID).
func (l *Log) Ops() []*Op {
	type entry struct {
		id OpID
		op *Op
	}
	es := make([]entry, 0, len(l.ops))
	for id, op := range l.ops {
		es = append(es, entry{id, op})
	}
	slices.SortFunc(es, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.op.Time, b.op.Time), a.id.Compare(b.id))
	})
	out := make([]*Op, len(es))
	for i, e := range es {
		out[i] = e.op.Clone()
	}
	return out
}

// Heads returns the ids of the ops that no op in the log names as a parent,
// sorted ascending: the parents of the next op made on this replica. It is
// empty only for an empty log.
func (l *Log) Heads() []OpID {
	var heads []OpID
	for id := range l.ops {
		if _, ok := l.parented[id]; !ok {
			heads = append(heads, id)
		}
	}
	slices.SortFunc(heads, OpID.Compare)
	return heads
}

// Len returns the number of ops in the log.
func (l *Log) Len() int { return len(l.ops) }

// State is what a team looks like given a set of ops.
type State struct {
	Name     string // from the genesis op; "" if the log has none
	Kind     TeamKind
	Creator  identity.DeviceID
	Members  []MemberInfo  // sorted by Name then Device
	Messages []MessageView // sorted by (Time, ID): a total order respecting causality
}

// Member returns the member info of device d, if d is a member.
func (s State) Member(d identity.DeviceID) (MemberInfo, bool) {
	for _, m := range s.Members {
		if m.Device == d {
			return m, true
		}
	}
	return MemberInfo{}, false
}

// MessageView is a message as shown: its op's id, author and time, the
// author's current member name, and the decoded body.
type MessageView struct {
	ID         OpID
	Author     identity.DeviceID
	AuthorName string
	Time       HLC
	Message
}

// State returns the team state of the ops in the log (a deep copy: the
// caller may modify it). The rules (issue #2):
//
//   - Genesis: the KindCreate op with no parents, a valid body and
//     Create.Creator.Device equal to its author; if several, the least by
//     (Time, ID). Its author is the creator. Without a genesis the state is
//     empty.
//   - Admins: the least fixpoint of {creator} ∪ {devices added with Admin
//     set by a member op whose author is an admin}. A member op is valid
//     when its author is in that final admin set.
//   - Members: the creator and every device added by a valid member op.
//     A device added several times (or the creator re-added) is an admin if
//     any valid add says so (the creator always is); its Name and Noise key
//     come from the add with the greatest (Time, ID), the genesis counting
//     as the creator's first add.
//   - Messages: KindMessage ops with a valid body whose author is a member.
//
// Ops by others, with bodies that do not decode, or of unknown kinds are kept
// in the log and ignored here.
//
// Caveat: nothing binds the team id to its genesis yet, so a member who can
// write ops for the team could write a competing Create op with an earlier
// timestamp. Issue #3 (membership) must bind the creator (for example, an
// invite carries the genesis op id).
func (l *Log) State() State {
	if l.state == nil {
		s := l.computeState()
		l.state = &s
	}
	return l.state.clone()
}

func (s State) clone() State {
	c := s
	c.Members = slices.Clone(s.Members)
	c.Messages = slices.Clone(s.Messages)
	for i := range c.Messages {
		if r := c.Messages[i].ReplyTo; r != nil {
			id := *r
			c.Messages[i].ReplyTo = &id
		}
	}
	return c
}

// add is one valid-looking member add, before the admin check.
type add struct {
	id   OpID
	op   *Op
	info MemberInfo
}

func later(a, b add) bool {
	return cmp.Or(cmp.Compare(a.op.Time, b.op.Time), a.id.Compare(b.id)) > 0
}

func (l *Log) computeState() State {
	// Genesis.
	var genesis *add
	for id, op := range l.ops {
		if op.Kind != KindCreate || len(op.Parents) != 0 {
			continue
		}
		c, err := UnmarshalCreate(op.Body)
		if err != nil || c.Creator.Device != op.Author {
			continue
		}
		g := add{id: id, op: op, info: c.Creator}
		if genesis == nil || later(*genesis, g) {
			genesis = &g
		}
	}
	if genesis == nil {
		return State{}
	}
	create, _ := UnmarshalCreate(genesis.op.Body)
	creator := genesis.op.Author

	// Member adds by author.
	byAuthor := make(map[identity.DeviceID][]add)
	for id, op := range l.ops {
		if op.Kind != KindMember {
			continue
		}
		m, err := UnmarshalMember(op.Body)
		if err != nil {
			continue
		}
		byAuthor[op.Author] = append(byAuthor[op.Author], add{id: id, op: op, info: m.Add})
	}

	// Admin fixpoint: a worklist from the creator through adds with Admin set.
	admins := map[identity.DeviceID]bool{creator: true}
	work := []identity.DeviceID{creator}
	for len(work) > 0 {
		a := work[len(work)-1]
		work = work[:len(work)-1]
		for _, ad := range byAuthor[a] {
			if d := ad.info.Device; ad.info.Admin && !admins[d] {
				admins[d] = true
				work = append(work, d)
			}
		}
	}

	// Members: the genesis and every add by an admin; last add wins for
	// Name and Noise, any admin add makes an admin.
	genesis.info.Admin = true
	latest := map[identity.DeviceID]add{creator: *genesis}
	for author, adds := range byAuthor {
		if !admins[author] {
			continue
		}
		for _, ad := range adds {
			if cur, ok := latest[ad.info.Device]; !ok || later(ad, cur) {
				latest[ad.info.Device] = ad
			}
		}
	}
	members := make([]MemberInfo, 0, len(latest))
	names := make(map[identity.DeviceID]string, len(latest))
	for d, ad := range latest {
		info := ad.info
		info.Admin = admins[d]
		members = append(members, info)
		names[d] = info.Name
	}
	slices.SortFunc(members, func(a, b MemberInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), slices.Compare(a.Device[:], b.Device[:]))
	})

	// Messages by members.
	var msgs []MessageView
	for id, op := range l.ops {
		if op.Kind != KindMessage {
			continue
		}
		name, ok := names[op.Author]
		if !ok {
			continue
		}
		m, err := UnmarshalMessage(op.Body)
		if err != nil {
			continue
		}
		msgs = append(msgs, MessageView{ID: id, Author: op.Author, AuthorName: name, Time: op.Time, Message: m})
	}
	slices.SortFunc(msgs, func(a, b MessageView) int {
		return cmp.Or(cmp.Compare(a.Time, b.Time), a.ID.Compare(b.ID))
	})

	return State{
		Name:     create.Name,
		Kind:     create.Kind,
		Creator:  creator,
		Members:  members,
		Messages: msgs,
	}
}
