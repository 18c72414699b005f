package crdt

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// fresh returns l's State resolved from nothing, leaving l's caches as
// they were.
func fresh(l *Log) State {
	state, memo, smemo := l.state, l.memo, l.smemo
	l.state, l.memo, l.smemo = nil, nil, nil
	s := l.State()
	l.state, l.memo, l.smemo = state, memo, smemo
	return s
}

// replayChecked adds ops to a new log of team in order, and at each add
// that check selects compares State with one resolved afresh, after the
// add and after taking back the new op or another (a trial the device core
// refuses), redacting a message, and adding back. It returns how many of
// those States used the kept membership, and how many the kept State
// (updated in place: stateAdded, stateRemoving).
func replayChecked(t *testing.T, team TeamID, ops []*Op, order []int, rng *rand.Rand, check func(i int) bool) (memoHits, stateHits int) {
	t.Helper()
	l := NewLog(team)
	same := func(step string, i int) {
		t.Helper()
		hit := l.memo != nil
		kept := l.state != nil
		got := l.State()
		if want := fresh(l); !reflect.DeepEqual(got, want) {
			t.Fatalf("add %d, %s: State with the kept membership (kept State %v) differs from one resolved afresh", i, step, kept)
		}
		if hit {
			memoHits++
		}
		if kept {
			stateHits++
		}
	}
	for i, k := range order {
		op := ops[k]
		if added, _ := l.Add(op); !added || !check(i) {
			continue
		}
		same("add", i)
		switch rng.IntN(6) {
		case 0:
			l.Remove(op.ID())
			same("remove the new op", i)
			l.Add(op)
			same("add it back", i)
		case 1:
			all := l.Ops()
			victim := all[rng.IntN(len(all))]
			l.Remove(victim.ID())
			same("remove an op", i)
			l.Add(victim)
			same("add it back", i)
		case 2:
			all := l.Ops()
			if v := all[rng.IntN(len(all))]; v.Kind == KindMessage && l.Redact(v.ID()) {
				same("redact", i)
			}
		}
	}
	return memoHits, stateHits
}

// nearOrder returns 0..n-1 with neighbours swapped now and then: ops
// mostly arriving after their parents, as they usually do.
func nearOrder(rng *rand.Rand, n int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	for i := 1; i < n; i++ {
		if rng.IntN(10) == 0 {
			order[i-1], order[i] = order[i], order[i-1]
		}
	}
	return order
}

// TestMemoMatchesFresh: the membership a log keeps between States (see
// memberMemo) never makes State differ from one resolved afresh, whatever
// order ops arrive in and whatever is removed (heads and inner ops alike),
// redacted and added back: on histories with forks, commits by non-admins,
// impossible and late parents, rival creates (history), and on a log with
// a removal whose removed member writes on concurrent branches until it is
// added back (bigLog: the author and partition-window rules read the
// ancestry the log keeps up to date).
func TestMemoMatchesFresh(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		team, ops := history(t, seed, 150)
		rng := rand.New(rand.NewPCG(seed, 7))
		order := rng.Perm(len(ops))
		if seed%2 == 0 {
			order = nearOrder(rng, len(ops))
		}
		hits, kept := replayChecked(t, team, ops, order, rng, func(int) bool { return true })
		t.Logf("seed %d: %d ops, memo %d, kept state %d", seed, len(ops), hits, kept)
		if hits < len(ops)/3 {
			t.Fatalf("seed %d: the kept membership used %d times in %d ops: the test exercises little", seed, hits, len(ops))
		}
	}
	big := bigLog(t, 2300)
	ops := big.Ops()
	st := big.State()
	if len(st.Removed) == 0 && len(st.Epochs) < 3 {
		t.Fatalf("bigLog has no removal")
	}
	rng := rand.New(rand.NewPCG(8, 9))
	hits, kept := replayChecked(t, big.Team(), ops, nearOrder(rng, len(ops)), rng, func(i int) bool {
		return i%97 == 0 || i > 1990 && i%4 == 0
	})
	t.Logf("bigLog: memo %d, kept state %d", hits, kept)
	if hits < 50 {
		t.Fatalf("bigLog: the kept membership used %d times: the test exercises little", hits)
	}
}

// chatter returns a team's genesis, a commit adding four members, and n
// ops of the kinds the kept State is updated for (messages, some replies,
// some with a patient reference; acks, read or not, naming earlier
// messages; prekeys), some by an outsider, some with impossible parents,
// some at equal times, some from a clock far ahead (replies to them are
// displayed after them), mixed with the odd filed op (which resolves the
// State afresh), sometimes before the message it names (which then shows
// it).
func chatter(t *testing.T, seed uint64, n int, kind TeamKind) (TeamID, []*Op) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 11))
	keys := detRand(seed + 100)
	team, _ := NewTeamID(keys)
	var devs []*identity.Device
	for range 6 {
		devs = append(devs, newDevice(t, keys))
	}
	outsider := devs[5]
	gen := newOp(devs[0], team, hlcAt(0, 0), nil, KindCreate, Create{Name: "T", Kind: kind, Creator: info(devs[0], "Ann", true)}.Marshal())
	l := NewLog(team)
	mustAdd(t, l, gen)
	var changes []Change
	for i, d := range devs[1:5] {
		changes = append(changes, Change{Action: ActAdd, Info: info(d, []string{"Ben", "Cat", "Dan", "Eve"}[i], i == 0)})
	}
	c, err := l.State().NextCommit(devs[0].ID(), changes...)
	if err != nil {
		t.Fatal(err)
	}
	add := newOp(devs[0], team, hlcAt(1, 0), []OpID{gen.ID()}, KindMember, c.Marshal())
	ops := []*Op{gen, add}
	var msgs []OpID
	for i := 0; len(ops) < n+2; i++ {
		by := devs[rng.IntN(5)]
		if rng.IntN(12) == 0 {
			by = outsider
		}
		// Parents: one or two recent ops; times mostly after them.
		parents := []OpID{ops[len(ops)-1-rng.IntN(min(len(ops), 4))].ID()}
		if rng.IntN(3) == 0 {
			parents = append(parents, ops[rng.IntN(len(ops))].ID())
		}
		at := hlcAt(2+i/3, uint16(i%3))
		if rng.IntN(25) == 0 {
			at = hlcAt(1, 0) // impossible: not after the commit it may name
		}
		switch x := rng.IntN(100); {
		case x < 50:
			m := Message{Text: "m", Priority: Priority(rng.IntN(3))}
			if len(msgs) > 0 && rng.IntN(4) == 0 {
				id := msgs[rng.IntN(len(msgs))]
				m.ReplyTo = &id
			}
			if rng.IntN(5) == 0 {
				m.Patient = "Patient/p1"
			}
			if rng.IntN(15) == 0 {
				at = hlcAt(5000+i, 0) // a clock far ahead: replies to it move after it
			}
			op := newOp(by, team, at, parents, KindMessage, m.Marshal())
			ops = append(ops, op)
			msgs = append(msgs, op.ID())
		case x < 85:
			if len(msgs) == 0 {
				continue
			}
			var ids []OpID
			for range 1 + rng.IntN(5) {
				ids = append(ids, msgs[rng.IntN(len(msgs))])
			}
			ops = append(ops, newOp(by, team, at, parents, KindAck, SplitAcks(rng.IntN(2) == 0, ids)[0].Marshal()))
		case x < 97:
			ops = append(ops, newOp(by, team, at, parents, KindPrekey, Prekey{Key: newDevice(t, keys).NoisePublic()}.Marshal()))
		default:
			if len(msgs) == 0 {
				continue
			}
			k := rng.IntN(len(msgs))
			f := Filed{At: 1700000000000, Entries: []FiledEntry{{Message: msgs[k], Ref: "Communication/c1"}}}
			if rng.IntN(2) == 0 {
				ops = append(ops, newOp(devs[0], team, at, parents, KindFiled, f.Marshal()))
				continue
			}
			// Filed before the message arrives: it shows when it does.
			j := slices.IndexFunc(ops, func(o *Op) bool { return o.ID() == msgs[k] })
			ops = slices.Insert(ops, j, newOp(devs[0], team, at, []OpID{gen.ID()}, KindFiled, f.Marshal()))
		}
	}
	// Last, a reply that arrives before the message it answers, which a
	// clock far ahead wrote: the reply's display place changes with it.
	last := []OpID{ops[len(ops)-1].ID()}
	ahead := newOp(devs[1], team, hlcAt(9000, 0), last, KindMessage, Message{Text: "ahead"}.Marshal())
	id := ahead.ID()
	reply := newOp(devs[2], team, hlcAt(3+n/3, 0), last, KindMessage, Message{Text: "re", ReplyTo: &id}.Marshal())
	return team, append(ops, reply, ahead)
}

// TestStateKeptMatchesFresh: the State a log updates in place for added
// messages, acks and prekeys (and keeps when such an op that does not count
// is taken back) equals one resolved afresh after every add, remove,
// redaction and re-add, in clinical and social teams (where messages with
// a patient reference count for nothing), with ops arriving in order, near
// order (acks and replies before what they name, now and then) and any
// order; and the in-place update is what most adds use.
func TestStateKeptMatchesFresh(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		kind := Clinical
		if seed%2 == 0 {
			kind = Social
		}
		team, ops := chatter(t, seed, 300, kind)
		rng := rand.New(rand.NewPCG(seed, 13))
		order := nearOrder(rng, len(ops))
		if seed%3 == 0 {
			order = rng.Perm(len(ops))
		}
		_, kept := replayChecked(t, team, ops, order, rng, func(int) bool { return true })
		t.Logf("seed %d (%v): %d ops, kept State %d times", seed, kind, len(ops), kept)
		if seed%3 != 0 && kept < len(ops)/2 {
			t.Fatalf("seed %d: the kept State used %d times in %d ops: the test exercises little", seed, kept, len(ops))
		}
	}
}

// TestViewIsStateUncopied: Log.View is the State that State copies, and a
// View taken before a Remove or a Redact still reads as it did (the device
// core reads one across its removals and redactions: only Add updates it
// in place).
func TestViewIsStateUncopied(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		team, ops := chatter(t, seed, 120, Clinical)
		rng := rand.New(rand.NewPCG(seed, 29))
		l := NewLog(team)
		checked := 0
		for i, op := range ops {
			if added, _ := l.Add(op); !added {
				continue
			}
			v := l.View()
			before := l.State()
			if !reflect.DeepEqual(*v, before) {
				t.Fatalf("seed %d, add %d: View differs from State", seed, i)
			}
			switch rng.IntN(3) {
			case 0:
				l.Remove(op.ID())
				if !reflect.DeepEqual(*v, before) {
					t.Fatalf("seed %d, add %d: a View taken before a remove changed", seed, i)
				}
				l.Add(op)
				checked++
				continue
			case 1:
				if op.Kind == KindMessage {
					l.Redact(op.ID())
				}
			default:
				continue
			}
			if !reflect.DeepEqual(*v, before) {
				t.Fatalf("seed %d, add %d: a View taken before a redaction changed", seed, i)
			}
			checked++
		}
		if checked < 20 {
			t.Fatalf("seed %d: %d removals and redactions checked: the test exercises little", seed, checked)
		}
	}
}
