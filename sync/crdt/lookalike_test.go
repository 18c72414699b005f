package crdt

import (
	"strings"
	"testing"
)

// TestLookAlikeNamesShownApart: two persons added concurrently, "Nurse Copa" (Latin) and "Nurse
// Сора" (a Cyrillic word that reads the same), are both members, and every replica shows the later
// one with its id, as for equal names, so no list shows two names a reader cannot tell apart.
func TestLookAlikeNamesShownApart(t *testing.T) {
	r := detRand(45)
	A, B, C := newDevice(t, r), newDevice(t, r), newDevice(t, r)
	team, _ := NewTeamID(r)
	g := createOp(A, team, hlcAt(0, 0), "Ward")
	addB := memberOp(A, team, hlcAt(1, 0), []OpID{g.ID()}, info(B, "Nurse Copa", false))
	addC := memberOp(A, team, hlcAt(2, 0), []OpID{addB.ID()}, info(C, "Nurse \u0421\u043e\u0440\u0430", false))
	for _, order := range [][]*Op{{g, addB, addC}, {g, addC, addB}} {
		l := NewLog(team)
		mustAdd(t, l, order...)
		s := l.State()
		var names []string
		for _, p := range s.Persons {
			names = append(names, p.Name)
		}
		if len(s.Persons) != 3 {
			t.Fatalf("persons %q; want 3", names)
		}
		copa, cyr := 0, 0
		for _, n := range names {
			switch {
			case n == "Nurse Copa":
				copa++
			case strings.HasPrefix(n, "Nurse \u0421\u043e\u0440\u0430 (") && strings.Contains(n, C.ID().Short()):
				cyr++
			}
		}
		if copa != 1 || cyr != 1 {
			t.Errorf("names %q; want Nurse Copa and the look-alike with its id", names)
		}
	}
}
