package crdt

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// fresh returns l's State resolved from nothing, leaving l's caches as
// they were.
func fresh(l *Log) State {
	state, memo := l.state, l.memo
	l.state, l.memo = nil, nil
	s := l.State()
	l.state, l.memo = state, memo
	return s
}

// replayChecked adds ops to a new log of team in order, and at each add
// that check selects compares State with one resolved afresh, after the
// add and after taking back the new op or another (a trial the device core
// refuses), redacting a message, and adding back. It returns how many of
// those States used the kept membership.
func replayChecked(t *testing.T, team TeamID, ops []*Op, order []int, rng *rand.Rand, check func(i int) bool) (memoHits int) {
	t.Helper()
	l := NewLog(team)
	same := func(step string, i int) {
		t.Helper()
		hit := l.memo != nil
		got := l.State()
		if want := fresh(l); !reflect.DeepEqual(got, want) {
			t.Fatalf("add %d, %s: State with the kept membership differs from one resolved afresh", i, step)
		}
		if hit {
			memoHits++
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
	return memoHits
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
		hits := replayChecked(t, team, ops, order, rng, func(int) bool { return true })
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
	hits := replayChecked(t, big.Team(), ops, nearOrder(rng, len(ops)), rng, func(i int) bool {
		return i%97 == 0 || i > 1990 && i%4 == 0
	})
	if hits < 50 {
		t.Fatalf("bigLog: the kept membership used %d times: the test exercises little", hits)
	}
}
