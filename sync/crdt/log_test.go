package crdt

import (
	"errors"
	"flag"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

var seedFlag = flag.Uint64("seed", 0, "seed of TestStateOrderIndependence (0 = time-based)")

func TestLogAdd(t *testing.T) {
	r := detRand(10)
	alice := newDevice(t, r)
	team, _ := NewTeamID(r)
	other, _ := NewTeamID(r)
	l := NewLog(team)
	c := createOp(alice, team, hlcAt(0, 0), "T")

	added, err := l.Add(c)
	if !added || err != nil {
		t.Fatalf("Add: got %v, %v; want true, nil", added, err)
	}
	added, err = l.Add(c.Clone())
	if added || err != nil {
		t.Errorf("Add duplicate: got %v, %v; want false, nil", added, err)
	}
	if _, err := l.Add(createOp(alice, other, hlcAt(0, 0), "T")); !errors.Is(err, ErrWrongTeam) {
		t.Errorf("Add other team: got %v; want ErrWrongTeam", err)
	}
	bad := messageOp(alice, team, hlcAt(1, 0), nil, "x")
	bad.Body[1] ^= 1
	if _, err := l.Add(bad); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Add tampered: got %v; want ErrBadSignature", err)
	}
	if got, want := l.Len(), 1; got != want {
		t.Errorf("Len: got %d; want %d", got, want)
	}
	if !l.Has(c.ID()) || l.Has(bad.ID()) {
		t.Errorf("Has: got %v, %v; want true, false", l.Has(c.ID()), l.Has(bad.ID()))
	}
	// The log keeps its own copy, and Op returns copies.
	id := c.ID()
	c.Body[0] = 99
	got, ok := l.Op(id)
	if !ok || got.ID() != id {
		t.Fatalf("Op: the log aliases the caller's op; want a copy")
	}
	got.Body[0] ^= 1
	got.Seal.Sig[0] ^= 1
	if again, _ := l.Op(id); again.ID() != id || again.Verify() != nil {
		t.Errorf("Op returned an alias; want a copy")
	}
	if got, want := l.Team(), team; got != want {
		t.Errorf("Team: got %v; want %v", got, want)
	}
}

func TestHeads(t *testing.T) {
	r := detRand(11)
	a := newDevice(t, r)
	team, _ := NewTeamID(r)
	l := NewLog(team)
	if got := l.Heads(); len(got) != 0 {
		t.Errorf("empty log Heads: got %v; want none", got)
	}
	c := createOp(a, team, hlcAt(0, 0), "T")
	m1 := messageOp(a, team, hlcAt(1, 0), []OpID{c.ID()}, "one")
	m2 := messageOp(a, team, hlcAt(1, 1), []OpID{c.ID()}, "two")
	m3 := messageOp(a, team, hlcAt(2, 0), []OpID{m1.ID(), m2.ID()}, "merge")
	steps := []struct {
		add  *Op
		want []OpID
	}{
		{c, []OpID{c.ID()}},
		{m1, []OpID{m1.ID()}},
		{m2, sorted(m1.ID(), m2.ID())},
		{m3, []OpID{m3.ID()}},
	}
	for i, s := range steps {
		mustAdd(t, l, s.add)
		if got := l.Heads(); !reflect.DeepEqual(got, s.want) {
			t.Errorf("step %d: Heads got %v; want %v", i, got, s.want)
		}
	}
	// A parent that arrives after its child is not a head.
	l2 := NewLog(team)
	mustAdd(t, l2, m3, m1)
	if got, want := l2.Heads(), []OpID{m3.ID()}; !reflect.DeepEqual(got, want) {
		t.Errorf("out of order: Heads got %v; want %v", got, want)
	}
	ops := l.Ops()
	if got, want := len(ops), 4; got != want {
		t.Fatalf("Ops: got %d; want %d", got, want)
	}
	if got, want := ops[0].ID(), c.ID(); got != want {
		t.Errorf("Ops[0]: got %v; want %v (sorted by time)", got, want)
	}
}

func sorted(ids ...OpID) []OpID {
	slices.SortFunc(ids, OpID.Compare)
	return ids
}

// TestValidity checks the issue #2 rules on small histories; each history
// is also added in reverse to check the order does not matter.
func TestValidity(t *testing.T) {
	r := detRand(12)
	var devs []*identity.Device
	for range 5 {
		devs = append(devs, newDevice(t, r))
	}
	A, B, C, D, E := devs[0], devs[1], devs[2], devs[3], devs[4]
	team, _ := NewTeamID(r)
	genesis := newOp(A, team, hlcAt(0, 0), nil, KindCreate, Create{Name: "Clinic", Kind: Clinical, Creator: info(A, "Ann", false)}.Marshal())
	g := []OpID{genesis.ID()}
	at := func(s int) HLC { return hlcAt(s, 0) }
	unknown := newOp(B, team, at(2), g, Kind(99), []byte("?"))
	chainB := memberOp(A, team, at(1), g, info(B, "Ben", true))
	chainC := memberOp(B, team, at(2), []OpID{chainB.ID()}, info(C, "Cat", true))
	chainD := memberOp(C, team, at(3), []OpID{chainC.ID()}, info(D, "Dan", false))

	type want struct {
		members  map[string]bool // name -> admin
		messages []string
	}
	tests := []struct {
		name string
		ops  []*Op
		want want
	}{
		{
			name: "creator alone",
			ops:  []*Op{genesis, messageOp(A, team, at(1), g, "hello")},
			want: want{map[string]bool{"Ann": true}, []string{"hello"}},
		},
		{
			name: "message from a non-member not shown",
			ops:  []*Op{genesis, messageOp(B, team, at(1), g, "intruder"), messageOp(A, team, at(2), g, "hello")},
			want: want{map[string]bool{"Ann": true}, []string{"hello"}},
		},
		{
			name: "member op from a non-admin ignored",
			ops: []*Op{genesis,
				memberOp(A, team, at(1), g, info(B, "Ben", false)),
				memberOp(B, team, at(2), g, info(C, "Cat", true)),
				messageOp(B, team, at(3), g, "from Ben"),
				messageOp(C, team, at(4), g, "from Cat"),
			},
			want: want{map[string]bool{"Ann": true, "Ben": false}, []string{"from Ben"}},
		},
		{
			name: "member op from a non-member ignored",
			ops:  []*Op{genesis, memberOp(E, team, at(1), g, info(E, "Eve", true)), messageOp(E, team, at(2), g, "hi")},
			want: want{map[string]bool{"Ann": true}, nil},
		},
		{
			name: "admin chain",
			ops: []*Op{genesis, chainB, chainC, chainD,
				messageOp(D, team, at(4), g, "from Dan"),
			},
			want: want{map[string]bool{"Ann": true, "Ben": true, "Cat": true, "Dan": false}, []string{"from Dan"}},
		},
		{
			name: "an admin's op that does not have its promotion in its causal past does not count",
			ops: []*Op{genesis,
				memberOp(A, team, at(1), g, info(B, "Ben", true)),
				memberOp(B, team, at(2), g, info(C, "Cat", true)),
			},
			want: want{map[string]bool{"Ann": true, "Ben": true}, nil},
		},
		{
			name: "admin flag from a non-admin gives nothing downstream",
			ops: []*Op{genesis,
				memberOp(A, team, at(1), g, info(B, "Ben", false)),
				memberOp(B, team, at(2), g, info(C, "Cat", true)),
				memberOp(C, team, at(3), g, info(D, "Dan", false)),
				messageOp(D, team, at(4), g, "from Dan"),
			},
			want: want{map[string]bool{"Ann": true, "Ben": false}, nil},
		},
		{
			name: "concurrent adds of one person: latest name wins, any admin add makes an admin",
			ops: []*Op{genesis,
				memberOp(A, team, at(1), g, info(B, "Ben", true)),
				memberOp(A, team, at(2), g, info(B, "Benjamin", false)),
				messageOp(B, team, at(4), g, "hi"),
			},
			want: want{map[string]bool{"Ann": true, "Benjamin": true}, []string{"hi"}},
		},
		{
			name: "adding a current member does not count",
			ops: []*Op{genesis, chainB,
				memberOp(B, team, at(3), []OpID{chainB.ID()}, info(A, "Dr Ann", false)),
				memberOp(A, team, at(4), []OpID{chainB.ID()}, info(B, "Benjamin", false)),
			},
			want: want{map[string]bool{"Ann": true, "Ben": true}, nil},
		},
		{
			name: "no genesis: nothing shown",
			ops:  []*Op{memberOp(A, team, at(1), g, info(B, "Ben", true)), messageOp(A, team, at(2), g, "hi")},
			want: want{nil, nil},
		},
		{
			name: "create by someone else for a creator is not a genesis",
			ops:  []*Op{newOp(E, team, at(0), nil, KindCreate, Create{Name: "X", Kind: Social, Creator: info(A, "Ann", true)}.Marshal()), messageOp(A, team, at(1), nil, "hi")},
			want: want{nil, nil},
		},
		{
			name: "create with parents is not a genesis",
			ops:  []*Op{newOp(A, team, at(0), []OpID{{1}}, KindCreate, Create{Name: "X", Kind: Social, Creator: info(A, "Ann", true)}.Marshal())},
			want: want{nil, nil},
		},
		{
			name: "later competing create ignored",
			ops: []*Op{genesis,
				newOp(E, team, at(5), nil, KindCreate, Create{Name: "Evil", Kind: Social, Creator: info(E, "Eve", true)}.Marshal()),
				messageOp(E, team, at(6), g, "mine now")},
			want: want{map[string]bool{"Ann": true}, nil},
		},
		{
			name: "unknown kinds kept, not shown",
			ops:  []*Op{genesis, unknown},
			want: want{map[string]bool{"Ann": true}, nil},
		},
		{
			name: "impossible parents not counted",
			ops: []*Op{genesis,
				memberOp(A, team, at(0), g, info(B, "Ben", true)),          // same time as its parent
				messageOp(A, team, hlcAt(0, 0)-1, g, "before the genesis"), // earlier than its parent
				messageOp(A, team, at(1), g, "hello"),
			},
			want: want{map[string]bool{"Ann": true}, []string{"hello"}},
		},
	}
	for _, tt := range tests {
		for _, reverse := range []bool{false, true} {
			ops := slices.Clone(tt.ops)
			if reverse {
				slices.Reverse(ops)
			}
			l := NewLog(team)
			mustAdd(t, l, ops...)
			if got, want := l.Len(), len(ops); got != want {
				t.Errorf("%s: Len got %d; want %d", tt.name, got, want)
			}
			s := l.State()
			var members map[string]bool
			for _, m := range s.Members {
				if members == nil {
					members = make(map[string]bool)
				}
				members[m.Name] = m.Admin
			}
			if !reflect.DeepEqual(members, tt.want.members) {
				t.Errorf("%s (reverse %v): members got %v; want %v", tt.name, reverse, members, tt.want.members)
			}
			var texts []string
			for _, m := range s.Messages {
				texts = append(texts, m.Text)
				if mi, ok := s.Member(m.Author); !ok || mi.Name != m.AuthorName {
					t.Errorf("%s: AuthorName got %q; want the member's name %q", tt.name, m.AuthorName, mi.Name)
				}
			}
			if !reflect.DeepEqual(texts, tt.want.messages) {
				t.Errorf("%s (reverse %v): messages got %q; want %q", tt.name, reverse, texts, tt.want.messages)
			}
			if tt.want.members != nil && (s.Name != "Clinic" || s.Creator != A.ID() || s.Kind != Clinical) {
				t.Errorf("%s: team got %q %v %v; want Clinic %v clinical", tt.name, s.Name, s.Creator.Short(), s.Kind, A.ID().Short())
			}
		}
	}
}

func TestStateSorting(t *testing.T) {
	r := detRand(13)
	a, b, c := newDevice(t, r), newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := newOp(a, team, hlcAt(0, 0), nil, KindCreate, Create{Name: "T", Kind: Social, Creator: info(a, "Mia", true)}.Marshal())
	g := []OpID{gen.ID()}
	l := NewLog(team)
	mustAdd(t, l, gen,
		memberOp(a, team, hlcAt(1, 0), g, info(b, "Zed", false)),
		memberOp(a, team, hlcAt(1, 1), g, info(c, "Amy", false)),
		messageOp(b, team, hlcAt(5, 0), g, "third"),
		messageOp(c, team, hlcAt(3, 0), g, "first"),
		messageOp(a, team, hlcAt(3, 1), g, "second"),
	)
	s := l.State()
	var names, texts []string
	for _, m := range s.Members {
		names = append(names, m.Name)
	}
	for _, m := range s.Messages {
		texts = append(texts, m.Text)
	}
	if want := []string{"Amy", "Mia", "Zed"}; !reflect.DeepEqual(names, want) {
		t.Errorf("members: got %v; want %v", names, want)
	}
	if want := []string{"first", "second", "third"}; !reflect.DeepEqual(texts, want) {
		t.Errorf("messages: got %v; want %v", texts, want)
	}
	// State returns a copy: changing it does not change the log's.
	s.Members[0].Name = "changed"
	s.Messages[0].Text = "changed"
	if s2 := l.State(); s2.Members[0].Name != "Amy" || s2.Messages[0].Text != "first" {
		t.Errorf("State aliases the cached state")
	}
}

// history builds a random team history from seed: several devices, about n
// ops including member adds by admins and by non-admins, messages by members
// and by outsiders, replies, forks and merges, ops with bad bodies, and a
// competing Create.
func history(t testing.TB, seed uint64, n int) (TeamID, []*Op) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	keys := detRand(seed)
	const numDevs = 8
	devs := make([]*identity.Device, numDevs)
	clocks := make([]*Clock, numDevs)
	wall := t0
	for i := range devs {
		devs[i] = newDevice(t, keys)
		skew := time.Duration(rng.IntN(2000)-1000) * time.Millisecond
		clocks[i] = &Clock{Now: func() time.Time { return wall.Add(skew) }}
	}
	team, _ := NewTeamID(keys)
	names := []string{"Ann", "Ben", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal"}

	var ops []*Op
	times := make(map[OpID]HLC)
	ids := make(map[*Op]OpID)
	emit := func(i int, parents []OpID, kind Kind, body []byte) {
		c := clocks[i]
		for _, p := range parents {
			c.Observe(times[p])
		}
		op := newOp(devs[i], team, c.Next(), parents, kind, body)
		ops = append(ops, op)
		ids[op] = op.ID()
		times[ids[op]] = op.Time
		wall = wall.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
	}
	// emitAt emits an op with the given time, without the clock.
	emitAt := func(i int, tm HLC, parents []OpID, kind Kind, body []byte) {
		op := newOp(devs[i], team, tm, parents, kind, body)
		ops = append(ops, op)
		ids[op] = op.ID()
		times[ids[op]] = op.Time
	}
	// parents: the heads of a random prefix (a replica that is behind), or a
	// random small set of ops (a fork).
	parents := func() []OpID {
		if len(ops) == 0 {
			return nil
		}
		if rng.IntN(3) == 0 {
			var ps []OpID
			for range 1 + rng.IntN(3) {
				ps = append(ps, ids[ops[rng.IntN(len(ops))]])
			}
			return ps
		}
		prefix := ops[:len(ops)-rng.IntN(min(len(ops), 5))]
		parented := make(map[OpID]bool)
		for _, op := range prefix {
			for _, p := range op.Parents {
				parented[p] = true
			}
		}
		var heads []OpID
		for _, op := range prefix {
			if id := ids[op]; !parented[id] {
				heads = append(heads, id)
			}
		}
		return heads
	}
	emit(0, nil, KindCreate, Create{Name: "Field team", Kind: Clinical, Creator: info(devs[0], names[0], true)}.Marshal())
	believedAdmins := []int{0}
	var msgIDs []OpID
	for len(ops) < n {
		switch x := rng.IntN(100); {
		case x < 20: // an admin (as far as the generator knows) adds one of the first six devices
			a := believedAdmins[rng.IntN(len(believedAdmins))]
			who := rng.IntN(numDevs - 2)
			admin := rng.IntN(3) == 0
			name := names[who]
			if rng.IntN(4) == 0 {
				name += "-2" // a rename
			}
			emit(a, parents(), KindMember, numbered(addCommit(info(devs[who], name, admin)), len(ops)))
			if admin {
				believedAdmins = append(believedAdmins, who)
			}
		case x < 27: // someone the generator does not believe an admin adds anyone, possibly as admin
			a := rng.IntN(numDevs)
			if slices.Contains(believedAdmins, a) {
				a = numDevs - 1 - rng.IntN(2) // an outsider
			}
			emit(a, parents(), KindMember, numbered(addCommit(info(devs[rng.IntN(numDevs)], names[rng.IntN(numDevs)], rng.IntN(2) == 0)), len(ops)))
		case x < 90: // a message, sometimes a reply, sometimes by an outsider
			m := Message{Text: "msg", Priority: Priority(rng.IntN(3))}
			if len(msgIDs) > 0 && rng.IntN(3) == 0 {
				id := msgIDs[rng.IntN(len(msgIDs))]
				m.ReplyTo = &id
			}
			if rng.IntN(4) == 0 {
				m.Patient = "P-" + names[rng.IntN(numDevs)]
			}
			emit(rng.IntN(numDevs), parents(), KindMessage, m.Marshal())
			msgIDs = append(msgIDs, ids[ops[len(ops)-1]])
		case x < 91: // a bad body (refused by Add) or an unknown kind
			emit(rng.IntN(numDevs), parents(), Kind(1+rng.IntN(6)), []byte{byte(rng.IntN(3))})
		case x < 94: // an ack of some messages, sometimes by an outsider
			if len(msgIDs) == 0 {
				continue
			}
			var ids []OpID
			for range 1 + rng.IntN(4) {
				ids = append(ids, msgIDs[rng.IntN(len(msgIDs))])
			}
			if rng.IntN(5) == 0 {
				ids = append(ids, ids[0]) // SplitAcks de-duplicates
			}
			emit(rng.IntN(numDevs), parents(), KindAck, SplitAcks(rng.IntN(2) == 0, ids)[0].Marshal())
		case x < 96: // impossible parents: a time not after a parent's
			ps := parents()
			if len(ps) == 0 {
				continue
			}
			i := rng.IntN(numDevs)
			tm := times[ps[rng.IntN(len(ps))]] - HLC(rng.IntN(2))
			kinds := []Kind{KindMessage, KindMember, KindAck}
			body := Message{Text: "impossible"}.Marshal()
			switch k := kinds[rng.IntN(3)]; k {
			case KindMember:
				body = addBody(info(devs[numDevs-1], "Imp", true))
				emitAt(i, tm, ps, k, body)
			case KindAck:
				if len(msgIDs) == 0 {
					continue
				}
				emitAt(i, tm, ps, k, Ack{Read: true, IDs: []OpID{msgIDs[rng.IntN(len(msgIDs))]}}.Marshal())
			default:
				emitAt(i, tm, ps, k, body)
			}
		default: // a competing Create by someone
			i := rng.IntN(numDevs)
			emit(i, nil, KindCreate, Create{Name: "Other", Kind: Social, Creator: info(devs[i], names[i], true)}.Marshal())
		}
	}
	// At least one op that Add refuses and one with an impossible parent.
	last := ops[len(ops)-1]
	emit(0, parents(), KindMessage, []byte{7})
	emitAt(1, last.Time, []OpID{ids[last]}, KindMessage, Message{Text: "impossible"}.Marshal())
	return team, ops
}

// numbered returns the encoding of c with epoch number 2+n: numbers that
// grow with the ops of a history count as new epochs.
func numbered(c Commit, n int) []byte {
	c.Number = uint32(2 + n)
	return c.Marshal()
}

// TestStateOrderIndependence adds a random history to many logs in random
// orders, with duplicates, and checks that they all show the same state.
// Replay a failure with -seed=N.
func TestStateOrderIndependence(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -run TestStateOrderIndependence -seed=%d)", seed, seed)
	team, ops := history(t, seed, 200)
	rng := rand.New(rand.NewPCG(seed, 1))

	// Ops that Add refuses (bad bodies) are refused whatever the order.
	ref := NewLog(team)
	refused := make([]bool, len(ops))
	nrefused := 0
	for i, op := range ops {
		if _, err := ref.Add(op); err != nil {
			if !errors.Is(err, ErrBadBody) {
				t.Fatalf("Add(%v op): %v; want nil or ErrBadBody", op.Kind, err)
			}
			refused[i] = true
			nrefused++
		}
	}
	want := ref.State()
	wantHeads := ref.Heads()
	if nrefused == 0 || len(ref.impossible()) == 0 {
		t.Fatalf("degenerate history: %d refused ops, %d with impossible parents", nrefused, len(ref.impossible()))
	}
	var acked int
	for _, m := range want.Messages {
		if len(m.ReceivedBy) > 0 {
			acked++
		}
	}

	// The history must exercise the rules: some ops valid, some not.
	var msgOps int
	for _, op := range ops {
		if op.Kind == KindMessage {
			msgOps++
		}
	}
	if len(want.Members) < 2 || len(want.Messages) == 0 || len(want.Messages) == msgOps {
		t.Fatalf("degenerate history: %d members, %d of %d messages shown", len(want.Members), len(want.Messages), msgOps)
	}
	t.Logf("%d ops: %d refused, %d impossible, %d members, %d of %d messages shown, %d acked, %d heads",
		len(ops), nrefused, len(ref.impossible()), len(want.Members), len(want.Messages), msgOps, acked, len(wantHeads))

	for i := range 20 {
		order := rng.Perm(len(ops))
		for range rng.IntN(40) { // duplicates
			order = slices.Insert(order, rng.IntN(len(order)+1), rng.IntN(len(ops)))
		}
		l := NewLog(team)
		for j, k := range order {
			if _, err := l.Add(ops[k]); (err != nil) != refused[k] {
				t.Fatalf("Add(%v op): got %v; want refused %v", ops[k].Kind, err, refused[k])
			}
			if j%50 == 0 {
				_ = l.State() // exercise the cache invalidation
			}
		}
		if got := l.State(); !reflect.DeepEqual(got, want) {
			t.Fatalf("permutation %d: State differs from the reference (seed %d):\ngot  %+v\nwant %+v", i, seed, got, want)
		}
		if got := l.Heads(); !reflect.DeepEqual(got, wantHeads) {
			t.Fatalf("permutation %d: Heads got %v; want %v (seed %d)", i, got, wantHeads, seed)
		}
		if got, want := l.Len(), ref.Len(); got != want { // not len(ops)-nrefused: history can make one op twice
			t.Fatalf("permutation %d: Len got %d; want %d", i, got, want)
		}
	}
}

func BenchmarkState(b *testing.B) {
	team, ops := history(b, 42, 1000)
	l := NewLog(team)
	for _, op := range ops {
		_, _ = l.Add(op) // a few bad bodies are refused
	}
	b.ReportAllocs()
	for b.Loop() {
		l.state, l.memo = nil, nil
		_ = l.State()
	}
	b.ReportMetric(float64(l.Len()), "ops")
}

// TestStateRelays: State.Relays lists the relays announced by relay ops of current admins that count,
// the latest per relay, leaving out one whose latest op removes it, and ignoring a non-admin's.
func TestStateRelays(t *testing.T) {
	r := detRand(29)
	a, b := newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := newOp(a, team, hlcAt(0, 0), nil, KindCreate, Create{Name: "T", Kind: Clinical, Creator: info(a, "Mia", true)}.Marshal())
	g := []OpID{gen.ID()}
	relay := func(dev *identity.Device, at HLC, peer string, removed bool, addrs ...string) *Op {
		var as [][]byte
		for _, s := range addrs {
			as = append(as, []byte(s))
		}
		return newOp(dev, team, at, g, KindRelay, Relay{Peer: []byte(peer), Addrs: as, Removed: removed}.Marshal())
	}
	l := NewLog(team)
	mustAdd(t, l, gen,
		memberOp(a, team, hlcAt(1, 0), g, info(b, "Zed", false)),
		relay(a, hlcAt(2, 0), "r1", false, "old"),
		relay(a, hlcAt(3, 0), "r1", false, "new"),
		relay(a, hlcAt(2, 1), "r2", false, "x"),
		relay(a, hlcAt(4, 0), "r2", true),
		relay(b, hlcAt(5, 0), "r3", false, "rogue"),
	)
	s := l.State()
	if len(s.Relays) != 1 || string(s.Relays[0].Peer) != "r1" || len(s.Relays[0].Addrs) != 1 || string(s.Relays[0].Addrs[0]) != "new" || s.Relays[0].By != a.ID() {
		t.Errorf("relays: %+v; want r1 at its newer address, by the admin", s.Relays)
	}
	for _, bad := range []Relay{{}, {Peer: make([]byte, MaxRelayPeerLen+1)}, {Peer: []byte("p"), Addrs: make([][]byte, MaxRelayAddrs+1)}, {Peer: []byte("p"), Addrs: [][]byte{{}}}} {
		if _, err := UnmarshalRelay(bad.Marshal()); err == nil {
			t.Errorf("UnmarshalRelay(%+v): no error", bad)
		}
	}
	good := Relay{Peer: []byte("p"), Addrs: [][]byte{{1, 2}}, Removed: true}
	if got, err := UnmarshalRelay(good.Marshal()); err != nil || !reflect.DeepEqual(got, good) {
		t.Errorf("UnmarshalRelay round trip: %+v, %v", got, err)
	}
}

// TestStatePrekeys: State.Prekeys holds each member device's newest prekey by (Time, ID) from the
// prekey ops that count and that it wrote itself; a non-member's is ignored, and a prekey of small
// order is refused as a body.
func TestStatePrekeys(t *testing.T) {
	r := detRand(31)
	a, b, x := newDevice(t, r), newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := newOp(a, team, hlcAt(0, 0), nil, KindCreate, Create{Name: "T", Kind: Clinical, Creator: info(a, "Mia", true)}.Marshal())
	g := []OpID{gen.ID()}
	key := func() identity.NoisePublic { return newDevice(t, r).NoisePublic() }
	kOld, kNew, kB, kX := key(), key(), key(), key()
	prekey := func(dev *identity.Device, at HLC, k identity.NoisePublic) *Op {
		return newOp(dev, team, at, g, KindPrekey, Prekey{Key: k}.Marshal())
	}
	l := NewLog(team)
	mustAdd(t, l, gen,
		memberOp(a, team, hlcAt(1, 0), g, info(b, "Zed", false)),
		prekey(a, hlcAt(2, 0), kOld),
		prekey(a, hlcAt(3, 0), kNew),
		prekey(b, hlcAt(2, 5), kB),
		prekey(x, hlcAt(4, 0), kX),
	)
	s := l.State()
	want := map[identity.DeviceID]identity.NoisePublic{a.ID(): kNew, b.ID(): kB}
	if !maps.Equal(s.Prekeys, want) {
		t.Errorf("prekeys: %v; want a's newer one and b's, not the non-member's", s.Prekeys)
	}
	for _, weak := range []identity.NoisePublic{{}, {1}} {
		if _, err := UnmarshalPrekey(Prekey{Key: weak}.Marshal()); err == nil {
			t.Errorf("UnmarshalPrekey(%v): no error for a key of small order", weak.Short())
		}
		if err := CheckBody(KindPrekey, Prekey{Key: weak}.Marshal()); err == nil {
			t.Errorf("CheckBody accepts a prekey of small order")
		}
	}
	if got, err := UnmarshalPrekey(Prekey{Key: kB}.Marshal()); err != nil || got.Key != kB {
		t.Errorf("UnmarshalPrekey round trip: %v, %v", got, err)
	}
}
