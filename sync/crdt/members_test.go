package crdt

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// scene builds small membership histories with explicit parents and
// times. Devices are named by one letter: A is the creator ("Ann").
type scene struct {
	t     testing.TB
	team  TeamID
	devs  map[string]*identity.Device
	names map[identity.DeviceID]string
	ops   []*Op
	gen   *Op
}

func newScene(t testing.TB, seed uint64) *scene {
	r := detRand(seed)
	s := &scene{t: t, devs: make(map[string]*identity.Device), names: make(map[identity.DeviceID]string)}
	for _, n := range strings.Split("A B C D E F G P Q", " ") {
		d := newDevice(t, r)
		s.devs[n] = d
		s.names[d.ID()] = n
	}
	s.team, _ = NewTeamID(r)
	s.gen = newOp(s.devs["A"], s.team, hlcAt(0, 0), nil, KindCreate, Create{Name: "Ward", Kind: Clinical, Creator: info(s.devs["A"], "Ann", true)}.Marshal())
	s.ops = []*Op{s.gen}
	return s
}

func (s *scene) d(n string) *identity.Device { return s.devs[n] }

func (s *scene) id(n string) identity.DeviceID { return s.devs[n].ID() }

// past returns a log of the ops in the causal past of parents, parents
// included.
func (s *scene) past(parents []*Op) *Log {
	byID := make(map[OpID]*Op, len(s.ops))
	for _, op := range s.ops {
		byID[op.ID()] = op
	}
	l := NewLog(s.team)
	work := slices.Clone(parents)
	for len(work) > 0 {
		op := work[len(work)-1]
		work = work[:len(work)-1]
		if l.Has(op.ID()) {
			continue
		}
		mustAdd(s.t, l, op)
		for _, p := range op.Parents {
			if po, ok := byID[p]; ok {
				work = append(work, po)
			}
		}
	}
	return l
}

func ids(ops []*Op) []OpID {
	var out []OpID
	for _, op := range ops {
		out = append(out, op.ID())
	}
	return out
}

// next makes a commit by author at second sec, after parents, as a node
// would: NextCommit of the state of its causal past.
func (s *scene) next(author string, sec int, parents []*Op, changes ...Change) *Op {
	s.t.Helper()
	st := s.past(parents).State()
	c, err := st.NextCommit(s.id(author), changes...)
	if err != nil {
		s.t.Fatalf("NextCommit by %s: %v", author, err)
	}
	op := newOp(s.d(author), s.team, hlcAt(sec, 0), ids(parents), KindMember, c.Marshal())
	s.ops = append(s.ops, op)
	return op
}

// raw makes a commit with the given number and recipients (device names),
// permitted or not.
func (s *scene) raw(author string, sec int, parents []*Op, number uint32, recips string, changes ...Change) *Op {
	s.t.Helper()
	var rs []Recipient
	for _, n := range strings.Fields(recips) {
		rs = append(rs, recipient(s.d(n)))
	}
	slices.SortFunc(rs, func(a, b Recipient) int { return compareDevice(a.Device, b.Device) })
	c := Commit{Number: number, Changes: changes, Recipients: rs}
	if err := c.Validate(); err != nil {
		s.t.Fatalf("raw commit: %v", err)
	}
	op := newOp(s.d(author), s.team, hlcAt(sec, 0), ids(parents), KindMember, c.Marshal())
	s.ops = append(s.ops, op)
	return op
}

func (s *scene) msg(author string, sec int, parents []*Op, text string) *Op {
	op := messageOp(s.d(author), s.team, hlcAt(sec, 0), ids(parents), text)
	s.ops = append(s.ops, op)
	return op
}

func (s *scene) add(who, name string, admin bool) Change {
	return Change{Action: ActAdd, Info: info(s.d(who), name, admin)}
}

func (s *scene) remove(who string) Change  { return Change{Action: ActRemove, Target: s.id(who)} }
func (s *scene) promote(who string) Change { return Change{Action: ActPromote, Target: s.id(who)} }
func (s *scene) unlink(dev string) Change  { return Change{Action: ActUnlink, Target: s.id(dev)} }
func (s *scene) link(dev, to string) Change {
	return Change{Action: ActLink, Info: info(s.d(dev), "device "+dev, false), Target: s.id(to)}
}

// state adds the scene's ops to logs in several orders, checks that they
// all show the same state, and returns it.
func (s *scene) state() State {
	s.t.Helper()
	var want State
	rng := rand.New(rand.NewPCG(uint64(len(s.ops)), 7))
	for i := range 6 {
		ops := slices.Clone(s.ops)
		switch i {
		case 0:
		case 1:
			slices.Reverse(ops)
		default:
			rng.Shuffle(len(ops), func(a, b int) { ops[a], ops[b] = ops[b], ops[a] })
		}
		l := NewLog(s.team)
		mustAdd(s.t, l, ops...)
		got := l.State()
		if i == 0 {
			want = got
		} else if !reflect.DeepEqual(got, want) {
			s.t.Fatalf("order %d: state differs:\ngot  %s\nwant %s", i, s.show(got), s.show(want))
		}
	}
	return want
}

// show summarises a state: persons as "Name*:devices" (* = admin), removed
// devices, messages, and epochs as "number" with "!" if sound and "<" for
// the current one.
func (s *scene) show(st State) string {
	var b strings.Builder
	for _, p := range st.Persons {
		admin := ""
		if p.Admin {
			admin = "*"
		}
		var ds []string
		for _, d := range p.Devices {
			ds = append(ds, s.names[d])
		}
		slices.Sort(ds)
		fmt.Fprintf(&b, "%s%s:%s ", p.Name, admin, strings.Join(ds, ","))
	}
	b.WriteString("| removed")
	var rs []string
	for _, d := range st.Removed {
		rs = append(rs, s.names[d])
	}
	slices.Sort(rs)
	for _, r := range rs {
		b.WriteString(" " + r)
	}
	b.WriteString(" | msgs")
	for _, m := range st.Messages {
		fmt.Fprintf(&b, " %s/%s", m.Text, m.AuthorName)
	}
	b.WriteString(" | epochs")
	for i, e := range st.Epochs {
		fmt.Fprintf(&b, " %d", e.Number)
		if e.Sound {
			b.WriteString("!")
		}
		if i == st.Current {
			b.WriteString("<")
		}
	}
	if st.NeedsRekey {
		b.WriteString(" rekey")
	}
	return b.String()
}

// check compares the summary of the scene's state with want, where the
// short ids of persons' display-name suffixes are written as (P-ID of X)
// for device X.
func (s *scene) check(name, want string) State {
	s.t.Helper()
	st := s.state()
	for n, d := range s.devs {
		want = strings.ReplaceAll(want, "(id "+n+")", "("+d.ID().Short()+")")
	}
	if got := s.show(st); got != want {
		s.t.Errorf("%s:\ngot  %s\nwant %s", name, got, want)
	}
	checkInvariants(s.t, st)
	return st
}

// checkInvariants checks what every State must satisfy.
func checkInvariants(t testing.TB, st State) {
	t.Helper()
	devs := make(map[identity.DeviceID]bool)
	names := make(map[string]bool)
	for _, p := range st.Persons {
		if names[p.Name] {
			t.Errorf("display name %q twice", p.Name)
		}
		names[p.Name] = true
		if len(p.Devices) == 0 || !slices.IsSortedFunc(p.Devices, compareDevice) {
			t.Errorf("person %s: devices %v", p.Name, p.Devices)
		}
		for _, d := range p.Devices {
			devs[d] = true
			m, ok := st.Member(d)
			if !ok || m.Name != p.Name || m.Admin != p.Admin {
				t.Errorf("device %s of %s: member %+v, %v", d.Short(), p.Name, m, ok)
			}
			if q, ok := st.PersonOf(d); !ok || q.ID != p.ID {
				t.Errorf("PersonOf(%s): got %v, %v", d.Short(), q.ID.Short(), ok)
			}
		}
	}
	if len(devs) != len(st.Members) {
		t.Errorf("%d devices of persons; %d members", len(devs), len(st.Members))
	}
	for _, d := range st.Removed {
		if devs[d] {
			t.Errorf("device %s both removed and a member", d.Short())
		}
	}
	if !slices.IsSortedFunc(st.Removed, compareDevice) {
		t.Errorf("Removed not sorted")
	}
	if st.Name == "" {
		return
	}
	if len(st.Epochs) == 0 || st.Epochs[0].Number != 1 || st.Epochs[0].Author != st.Creator {
		t.Fatalf("epochs: want the genesis first, got %+v", st.Epochs)
	}
	cur := -1
	for i, e := range st.Epochs {
		if e.Tag != TagOf(e.ID) {
			t.Errorf("epoch %d: tag %08x; want %08x", i, e.Tag, TagOf(e.ID))
		}
		if i > 0 && st.Epochs[i-1].Number > e.Number {
			t.Errorf("epochs not sorted by number")
		}
		if e.Sound {
			cur = i
		}
		if got := st.Epoch(e.Tag); !slices.ContainsFunc(got, func(x EpochView) bool { return x.ID == e.ID }) {
			t.Errorf("Epoch(%08x) misses epoch %d", e.Tag, i)
		}
	}
	// NeedsRekey also holds when an epoch lies outside the current one's causal past
	// (TestRekeyDetached), which the state alone does not show.
	if st.Current != cur || (cur == -1 || cur != len(st.Epochs)-1) && !st.NeedsRekey {
		t.Errorf("Current %d, NeedsRekey %v; want %d", st.Current, st.NeedsRekey, cur)
	}
}

func TestMembershipRules(t *testing.T) {
	tests := []struct {
		name  string
		build func(s *scene)
		want  string
	}{
		{
			name:  "genesis alone: epoch 1 is sound",
			build: func(s *scene) {},
			want:  "Ann*:A | removed | msgs | epochs 1!<",
		},
		{
			name: "add and remove; the leaver's earlier messages stay, later ones and unwitnessed concurrent ones do not count",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				m1 := s.msg("B", 2, []*Op{b}, "before")
				r := s.next("A", 3, []*Op{m1}, s.remove("B"))
				s.msg("B", 4, []*Op{m1}, "concurrent")
				s.msg("B", 5, []*Op{r}, "after")
			},
			want: "Ann*:A | removed B | msgs before/Ben | epochs 1! 2 3!<",
		},
		{
			name: "a leaver's concurrent message counts once a member who had not received the removal built on it",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", false))
				b := s.next("A", 2, []*Op{c}, s.add("B", "Ben", false))
				r := s.next("A", 3, []*Op{b}, s.remove("B"))
				seen := s.msg("B", 4, []*Op{b}, "seen by Cat")
				late := s.msg("B", 5, []*Op{b}, "seen after the removal")
				s.msg("B", 6, []*Op{late}, "Ben on Ben") // the leaver does not witness itself
				s.msg("C", 7, []*Op{seen}, "reply")      // Cat had not received r: a witness
				s.msg("C", 8, []*Op{late, r}, "knew")    // Cat had received r: no witness
			},
			want: "Ann*:A Cat:C | removed B | msgs seen by Cat/Ben reply/Cat knew/Cat | epochs 1 2! 3 4!<",
		},
		{
			name: "re-add after the removal counts; messages after the re-add count again",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				r := s.next("A", 2, []*Op{b}, s.remove("B"))
				m := s.msg("B", 3, []*Op{r}, "removed")
				b2 := s.next("A", 4, []*Op{m}, s.add("B", "Benjamin", false))
				s.msg("B", 5, []*Op{b2}, "back")
			},
			want: "Ann*:A Benjamin:B | removed | msgs back/Benjamin | epochs 1 2! 3 4!<",
		},
		{
			name: "removal wins over a concurrent re-add",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				b := s.next("A", 2, []*Op{c}, s.add("B", "Ben", false))
				r1 := s.next("A", 3, []*Op{b}, s.remove("B"))
				s.next("A", 4, []*Op{r1}, s.add("B", "Ben A", false)) // concurrent with C's
				b3 := s.next("C", 5, []*Op{r1}, s.add("B", "Ben C", false))
				s.next("C", 6, []*Op{b3}, s.remove("B"))
			},
			want: "Ann*:A Cat*:C | removed B | msgs | epochs 1 2! 3 4! 5 5 6!<",
		},
		{
			name: "removal wins over a concurrent link of a device to the removed person",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				b := s.next("A", 2, []*Op{c}, s.add("B", "Ben", false))
				s.next("A", 3, []*Op{b}, s.remove("B"))
				l := s.next("C", 4, []*Op{b}, s.link("P", "B")) // by an admin who stays
				p := s.msg("P", 5, []*Op{l}, "from P")
				s.next("P", 6, []*Op{l})      // a re-key by P, concurrent with the removal: cut
				s.msg("C", 7, []*Op{p}, "ok") // Cat had not received the removal: P's message counts
			},
			want: "Ann*:A Cat*:C | removed B P | msgs from P/Ben ok/Cat | epochs 1 2! 3 4!< 4 rekey",
		},
		{
			name: "a person links and unlinks its own devices; unlinking the last one leaves no person",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				l := s.next("B", 2, []*Op{b}, s.link("P", "B"))
				u := s.next("P", 3, []*Op{l}, s.unlink("B"))
				m := s.msg("P", 4, []*Op{u}, "phone only")
				s.next("P", 5, []*Op{m}, s.unlink("P"))
			},
			want: "Ann*:A | removed B P | msgs phone only/Ben | epochs 1! 2 3 4 5!<",
		},
		{
			name: "a device linked to two persons concurrently is the later's; removing that person removes it",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				c := s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
				l1 := s.next("A", 3, []*Op{c}, s.link("P", "B"))
				l2 := s.next("C", 4, []*Op{c}, s.link("P", "C"))
				s.next("A", 5, []*Op{l1, l2}, s.remove("C"))
			},
			want: "Ann*:A Ben:B | removed C P | msgs | epochs 1 2! 3 4 4 5!<",
		},
		{
			name: "a person whose devices are all unlinked is gone: no link to it, and it can be added again",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				u := s.next("B", 2, []*Op{b}, s.unlink("B"))
				s.raw("A", 3, []*Op{u}, 4, "A B P", s.link("P", "B"))
				s.next("A", 4, []*Op{u}, s.add("B", "Ben again", false))
			},
			want: "Ann*:A Ben again:B | removed | msgs | epochs 1 2! 3 4!<",
		},
		{
			name: "authorisation: a member may not add, remove, promote, or link to or unlink from another person",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				c := s.next("A", 2, []*Op{b}, s.add("C", "Cat", false))
				s.raw("B", 3, []*Op{c}, 4, "A B C E", s.add("E", "Eve", false))
				s.raw("B", 3, []*Op{c}, 4, "A B", s.remove("C"))
				s.raw("B", 3, []*Op{c}, 4, "A B C", s.promote("B"))
				s.raw("B", 3, []*Op{c}, 4, "A B C P", s.link("P", "C"))
				s.raw("C", 3, []*Op{c}, 4, "C", s.unlink("A"))
				s.raw("E", 3, []*Op{c}, 4, "A B C") // a re-key by a non-member
			},
			want: "Ann*:A Ben:B Cat:C | removed | msgs | epochs 1 2 3!<",
		},
		{
			name: "one unpermitted change makes the whole commit invalid, epoch included",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				s.raw("A", 2, []*Op{b}, 3, "A B C", s.add("C", "Cat", false), s.promote("A")) // A is an admin already
				s.raw("A", 2, []*Op{b}, 3, "A B C", s.add("C", "Cat", false), s.remove("E"))  // E is no member
			},
			want: "Ann*:A Ben:B | removed | msgs | epochs 1 2!<",
		},
		{
			name: "a member re-keys; a member links its own device; promotion lets a member add",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				k := s.next("B", 2, []*Op{b})
				l := s.next("B", 3, []*Op{k}, s.link("P", "B"))
				p := s.next("A", 4, []*Op{l}, s.promote("B"))
				s.next("P", 5, []*Op{p}, s.add("C", "Cat", false))
			},
			want: "Ann*:A Ben*:B,P Cat:C | removed | msgs | epochs 1 2 3 4 5 6!<",
		},
		{
			name: "commits that do not descend from the genesis, or do not raise the epoch number, do not count",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				s.raw("A", 2, nil, 9, "A C", s.add("C", "Cat", false))
				s.raw("A", 2, []*Op{b}, 2, "A B E", s.add("E", "Eve", false))
			},
			want: "Ann*:A Ben:B | removed | msgs | epochs 1 2!<",
		},
		{
			name: "an admin removed concurrently with ops it signed: its commits do not count, its witnessed messages do",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				kept := s.next("C", 2, []*Op{c}, s.add("B", "Ben", false)) // in the causal past of the removal: counts
				s.next("A", 3, []*Op{kept}, s.remove("C"))
				e := s.next("C", 4, []*Op{kept}, s.add("E", "Eve", false)) // concurrent: cut
				s.msg("E", 5, []*Op{e}, "from Eve")
				m := s.msg("C", 5, []*Op{e}, "from Cat")
				s.msg("E", 6, []*Op{m}, "Eve saw it") // Eve was never a member: no witness
				s.msg("C", 6, []*Op{kept}, "unseen")  // nobody built on it
				s.msg("B", 7, []*Op{m}, "Ben saw it") // Ben had not received the removal: a witness
			},
			want: "Ann*:A Ben:B | removed C | msgs from Cat/Cat Ben saw it/Ben | epochs 1 2 3 4!<",
		},
		{
			name: "mutual concurrent removal: the earlier by (Time, ID) wins",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				s.next("C", 3, []*Op{c}, s.remove("A"))
				s.next("A", 2, []*Op{c}, s.remove("C"))
			},
			want: "Ann*:A | removed C | msgs | epochs 1! 2 3!<",
		},
		{
			name: "mutual concurrent removal, the other way round",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				s.next("C", 2, []*Op{c}, s.remove("A"))
				s.next("A", 3, []*Op{c}, s.remove("C"))
			},
			want: "Cat*:C | removed A | msgs | epochs 1 2 3!<",
		},
		{
			name: "a cycle of three concurrent removals resolves and ends",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				d := s.next("A", 2, []*Op{c}, s.add("D", "Dan", true))
				s.next("A", 3, []*Op{d}, s.remove("C"))
				s.next("C", 4, []*Op{d}, s.remove("D"))
				s.next("D", 5, []*Op{d}, s.remove("A"))
			},
			// Removals are judged in (Time, ID) order: A's removal of C
			// counts and cuts C's removal of D (by C, concurrent, later);
			// D's removal of A counts (A's removal of C is earlier, so it
			// does not cut D's). Neither side's epoch is sound.
			want: "Dan*:D | removed A C | msgs | epochs 1 2 3 4 4 rekey",
		},
		{
			name: "duplicate display names: the later added shows its short id",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				s.next("A", 2, []*Op{c}, s.add("B", "Sam", false))
				s.next("C", 3, []*Op{c}, s.add("E", "Sam", false))
				s.next("C", 4, []*Op{c}, s.add("F", "Ann", false))
			},
			want: "Ann*:A Ann (id F):F Cat*:C Sam:B Sam (id E):E | removed | msgs | epochs 1 2 3 3 3 rekey",
		},
		{
			name: "a removed author's name is marked when a member now shows it",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Sam", false))
				m := s.msg("B", 2, []*Op{b}, "hi")
				r := s.next("A", 3, []*Op{m}, s.remove("B"))
				s.next("A", 4, []*Op{r}, s.add("E", "Sam", false))
			},
			want: "Ann*:A Sam:E | removed B | msgs hi/Sam (id B) | epochs 1 2 3 4!<",
		},
		{
			name: "concurrent re-keys: every replica takes the greatest sound epoch",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
				s.next("A", 2, []*Op{b})
				s.next("B", 3, []*Op{b})
			},
			want: "Ann*:A Ben:B | removed | msgs | epochs 1 2! 3! 3!<",
		},
		{
			name: "a partition merge that leaves no sound epoch needs a re-key",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				b := s.next("A", 2, []*Op{c}, s.add("B", "Ben", false))
				s.next("A", 3, []*Op{b}, s.remove("B"))            // side 1
				s.next("C", 4, []*Op{b}, s.add("E", "Eve", false)) // side 2
			},
			want: "Ann*:A Cat*:C Eve:E | removed B | msgs | epochs 1 2 3 4 4 rekey",
		},
		{
			name: "after the merge, a member's re-key excludes everyone removed on either side",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				b := s.next("A", 2, []*Op{c}, s.add("B", "Ben", false))
				r := s.next("A", 3, []*Op{b}, s.remove("B"))
				e := s.next("C", 4, []*Op{b}, s.add("E", "Eve", false))
				s.next("E", 5, []*Op{r, e})
			},
			want: "Ann*:A Cat*:C Eve:E | removed B | msgs | epochs 1 2 3 4 4 5!<",
		},
		{
			name: "an unsound commit still changes membership, and asks for a re-key",
			build: func(s *scene) {
				s.raw("A", 1, []*Op{s.gen}, 2, "A", s.add("B", "Ben", false)) // forgot B
			},
			want: "Ann*:A Ben:B | removed | msgs | epochs 1 2 rekey",
		},
	}
	for i, tt := range tests {
		s := newScene(t, uint64(100+i))
		tt.build(s)
		s.check(tt.name, tt.want)
	}
}

// TestOnlyValidCommitsCut checks that a removal cuts only while it is
// valid: a commit by a device whose add was cut, or that was already
// removed, cuts nothing, whether it comes before or after the valid commits
// concurrent with it (found by the key-epoch property test of
// sync/teamkeys, seeds 5189 and 20378); and that a removal whose cuts would
// make it invalid is cut itself (rule 4 of docs/membership.md).
func TestOnlyValidCommitsCut(t *testing.T) {
	tests := []struct {
		name  string
		build func(s *scene)
		want  string
	}{
		{
			name: "a removal by a device whose add was cut does not cut a valid commit judged before it",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", true))
				d := s.next("A", 2, []*Op{b}, s.add("D", "Dan", false))
				e := s.next("B", 3, []*Op{d}, s.add("E", "Eve", true)) // cut by r: Eve is never added
				r := s.next("A", 4, []*Op{d}, s.remove("B"))
				s.next("D", 5, []*Op{r})                           // valid re-key, concurrent with the next
				s.raw("E", 6, []*Op{e}, 5, "A B E", s.remove("D")) // invalid: must not cut Dan's re-key
			},
			want: "Ann*:A Dan:D | removed B | msgs | epochs 1 2 3 4! 5!<",
		},
		{
			name: "the same with the invalid removal first in (Time, ID) order",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", true))
				d := s.next("A", 2, []*Op{b}, s.add("D", "Dan", false))
				e := s.next("B", 3, []*Op{d}, s.add("E", "Eve", true))
				r := s.next("A", 4, []*Op{d}, s.remove("B"))
				s.raw("E", 5, []*Op{e}, 5, "A B E", s.remove("D"))
				s.next("D", 6, []*Op{r})
			},
			want: "Ann*:A Dan:D | removed B | msgs | epochs 1 2 3 4! 5!<",
		},
		{
			name: "a removal by a device already removed in its causal past does not cut",
			build: func(s *scene) {
				b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", true))
				d := s.next("A", 2, []*Op{b}, s.add("D", "Dan", false))
				r := s.next("A", 3, []*Op{d}, s.remove("B"))
				s.next("D", 4, []*Op{r})
				s.raw("B", 5, []*Op{r}, 5, "A B", s.remove("D"))
			},
			want: "Ann*:A Dan:D | removed B | msgs | epochs 1 2 3 4! 5!<",
		},
		{
			name: "a removal whose cut would make it invalid is cut itself",
			build: func(s *scene) {
				c := s.next("A", 1, []*Op{s.gen}, s.add("C", "Cat", true))
				d := s.next("A", 2, []*Op{c}, s.add("D", "Dan", true))
				e := s.next("C", 3, []*Op{d}, s.add("E", "Eve", true))
				s.next("E", 4, []*Op{e}, s.remove("D"))
				s.next("D", 5, []*Op{d}, s.remove("A")) // cut by Eve's removal of Dan, earlier
				// Cutting Cat's add of Eve would make Eve's removal invalid,
				// so Dan's removal of Ann valid, which cuts this one: it is
				// cut, and Cat's add stands.
				s.next("A", 6, []*Op{d}, s.remove("C"))
			},
			want: "Ann*:A Cat*:C Eve*:E | removed D | msgs | epochs 1 2 3 4 5!<",
		},
	}
	for i, tt := range tests {
		s := newScene(t, uint64(200+i))
		tt.build(s)
		s.check(tt.name, tt.want)
	}
}

// TestReplay checks that a commit op delivered twice is one op.
func TestReplay(t *testing.T) {
	s := newScene(t, 7)
	b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false))
	r := s.next("A", 2, []*Op{b}, s.remove("B"))
	l := NewLog(s.team)
	mustAdd(t, l, s.gen, b, r)
	want := l.State()
	for _, op := range []*Op{r, b, r.Clone()} {
		if added, err := l.Add(op); added || err != nil {
			t.Errorf("Add again: got %v, %v; want false, nil", added, err)
		}
	}
	if got := l.State(); !reflect.DeepEqual(got, want) || l.Len() != 3 {
		t.Errorf("state changed by a replay:\ngot  %s\nwant %s", s.show(got), s.show(want))
	}
}

func TestNextCommit(t *testing.T) {
	s := newScene(t, 8)
	b := s.next("A", 1, []*Op{s.gen}, s.add("B", "Ben", false), s.link("P", "B"))
	st := s.state()
	if got, want := s.show(st), "Ann*:A Ben:B,P | removed | msgs | epochs 1 2!<"; got != want {
		t.Fatalf("got %s; want %s", got, want)
	}
	c, err := st.NextCommit(s.id("A"), s.unlink("P"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Recipient{recipient(s.d("A")), recipient(s.d("B"))}
	slices.SortFunc(want, func(a, b Recipient) int { return compareDevice(a.Device, b.Device) })
	if c.Number != 3 || !reflect.DeepEqual(c.Recipients, want) || len(c.Changes) != 1 {
		t.Errorf("NextCommit: got %+v", c)
	}
	for _, tt := range []struct {
		author  string
		changes []Change
	}{
		{"B", []Change{s.add("C", "Cat", false)}},
		{"E", nil},
		{"A", []Change{s.add("B", "Ben", false)}},
		{"A", []Change{s.remove("A"), s.add("C", "Cat", false)}},
		{"A", []Change{s.remove("B"), s.remove("A")}}, // nobody left to receive the key
	} {
		if _, err := st.NextCommit(s.id(tt.author), tt.changes...); err == nil {
			t.Errorf("NextCommit by %s of %v: got nil error", tt.author, tt.changes)
		}
	}
	// State returns copies.
	l := s.past([]*Op{b})
	st = l.State()
	st.Persons[1].Devices[0], st.Epochs[1].Recipients[0] = identity.DeviceID{}, Recipient{}
	if again := l.State(); again.Persons[1].Devices[0] == (identity.DeviceID{}) || again.Epochs[1].Recipients[0] == (Recipient{}) {
		t.Errorf("State aliases the cached Persons or Epochs")
	}
	if _, err := (State{Current: -1}).NextCommit(s.id("A")); err == nil {
		t.Errorf("NextCommit of an empty state: got nil error")
	}
}

// TestMembershipOrderIndependence simulates devices that make membership
// changes, re-keys, messages and acks in partitions that merge at random,
// with the ops they would make (NextCommit of what each has seen) and a few
// they should not; then adds the whole set to logs in random orders and
// checks that they all show the same state, epochs included, and that after
// one re-key by a remaining member the team has a sound current epoch.
// Replay a failure with -seed=N.
func TestMembershipOrderIndependence(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(rand.Int64())
	}
	t.Logf("seed %d (replay with -run TestMembershipOrderIndependence -seed=%d)", seed, seed)
	var total roundStats
	for round := range 12 {
		st := membershipRound(t, seed+uint64(round))
		total.removed += st.removed
		total.invalid += st.invalid
		total.forks += st.forks
		total.rekey += st.rekey
	}
	t.Logf("in all: %+v", total)
	if total.removed == 0 || total.invalid == 0 || total.forks == 0 || total.rekey == 0 {
		t.Errorf("degenerate histories (seed %d): %+v", seed, total)
	}
}

// nextCommitCounts checks that a commit made by NextCommit of a log's state
// and added to it counts there, as its current, sound epoch.
func nextCommitCounts(t *testing.T, seed uint64, l *Log, op *Op) {
	t.Helper()
	st := l.State()
	if len(st.Epochs) == 0 || st.Epochs[len(st.Epochs)-1].ID != op.ID() || st.NeedsRekey {
		c, _ := UnmarshalCommit(op.Body)
		t.Fatalf("seed %d: a commit made by NextCommit does not count as the current epoch where it was made:\n%+v\nepochs %+v\ncurrent %d", seed, c, st.Epochs, st.Current)
	}
}

type roundStats struct {
	removed int // devices removed
	invalid int // commits that do not count
	forks   int // epoch numbers made twice (concurrent commits)
	rekey   int // histories that ended needing a re-key
}

func membershipRound(t *testing.T, seed uint64) roundStats {
	rng := rand.New(rand.NewPCG(seed, 3))
	keys := detRand(seed)
	const numDevs = 7
	devs := make([]*identity.Device, numDevs)
	for i := range devs {
		devs[i] = newDevice(t, keys)
	}
	team, _ := NewTeamID(keys)
	var all []*Op
	// Each device has its own log (what it has seen).
	logs := make([]*Log, numDevs)
	for i := range logs {
		logs[i] = NewLog(team)
	}
	sec := 0
	emit := func(i int, kind Kind, body []byte) *Op {
		sec++
		tm := hlcAt(sec, uint16(i))
		op := newOp(devs[i], team, tm, logs[i].HeadsBefore(tm), kind, body)
		all = append(all, op)
		mustAdd(t, logs[i], op)
		return op
	}
	sync := func(a, b int) {
		for _, op := range logs[a].Ops() {
			mustAdd(t, logs[b], op)
		}
		for _, op := range logs[b].Ops() {
			mustAdd(t, logs[a], op)
		}
	}
	gen := emit(0, KindCreate, Create{Name: "T", Kind: Clinical, Creator: info(devs[0], "Ann", true)}.Marshal())
	for _, l := range logs {
		mustAdd(t, l, gen)
	}
	names := []string{"Ann", "Ben", "Cat", "Sam", "Sam", "Eve", "Gus"}
	// Two partitions that mostly sync within themselves.
	side := func(i int) int { return i % 2 }
	for range 150 {
		i := rng.IntN(numDevs)
		st := logs[i].State()
		if _, ok := st.Member(devs[i].ID()); !ok && rng.IntN(4) != 0 {
			i = 0 // mostly, members act
			st = logs[0].State()
		}
		switch x := rng.IntN(20); {
		case x < 6: // sync with someone, usually on the same side
			j := rng.IntN(numDevs)
			if side(i) != side(j) && rng.IntN(4) != 0 {
				continue
			}
			sync(i, j)
		case x < 13: // a membership change this device may or may not be allowed to make
			j := rng.IntN(numDevs)
			var ch Change
			switch rng.IntN(6) {
			case 0, 1:
				ch = Change{Action: ActAdd, Info: info(devs[j], names[j], rng.IntN(2) == 0)}
			case 2:
				ch = Change{Action: ActRemove, Target: devs[j].ID()}
			case 3:
				ch = Change{Action: ActPromote, Target: devs[j].ID()}
			case 4:
				to := devs[rng.IntN(numDevs)].ID()
				ch = Change{Action: ActLink, Info: info(devs[j], "dev", false), Target: to}
			default:
				ch = Change{Action: ActUnlink, Target: devs[j].ID()}
			}
			c, err := st.NextCommit(devs[i].ID(), ch)
			if err != nil {
				if rng.IntN(4) != 0 {
					continue
				}
				// Make it anyway, with some recipients: it must not count.
				c = Commit{Number: st.Epochs[len(st.Epochs)-1].Number + 1, Changes: []Change{ch},
					Recipients: []Recipient{recipient(devs[i])}}
				if c.Validate() != nil {
					continue
				}
				op := emit(i, KindMember, c.Marshal())
				if len(logs[i].State().Epoch(TagOf(op.ID()))) != 0 && !strings.Contains(err.Error(), "recipients") {
					t.Fatalf("seed %d: a commit NextCommit refused (%v) counts", seed, err)
				}
				continue
			}
			nextCommitCounts(t, seed, logs[i], emit(i, KindMember, c.Marshal()))
		case x < 15: // a re-key
			if c, err := st.NextCommit(devs[i].ID()); err == nil {
				nextCommitCounts(t, seed, logs[i], emit(i, KindMember, c.Marshal()))
			}
		case x < 18:
			emit(i, KindMessage, Message{Text: fmt.Sprintf("m%d", sec)}.Marshal())
		default:
			if len(st.Messages) > 0 {
				emit(i, KindAck, SplitAcks(true, []OpID{st.Messages[rng.IntN(len(st.Messages))].ID})[0].Marshal())
			}
		}
	}
	ref := NewLog(team)
	mustAdd(t, ref, all...)
	want := ref.State()
	checkInvariants(t, want)
	for p := range 5 {
		ops := slices.Clone(all)
		rng.Shuffle(len(ops), func(a, b int) { ops[a], ops[b] = ops[b], ops[a] })
		for range rng.IntN(5) {
			ops = append(ops, ops[rng.IntN(len(ops))]) // duplicates
		}
		l := NewLog(team)
		for _, op := range ops {
			if _, err := l.Add(op); err != nil {
				t.Fatal(err)
			}
		}
		if got := l.State(); !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d, permutation %d: state differs\ngot  %+v\nwant %+v", seed, p, got, want)
		}
	}
	var stats roundStats
	stats.removed = len(want.Removed)
	numbers := make(map[uint32]int)
	for _, e := range want.Epochs {
		numbers[e.Number]++
		if numbers[e.Number] == 2 {
			stats.forks++
		}
	}
	for _, op := range all {
		if op.Kind == KindMember && len(want.Epoch(TagOf(op.ID()))) == 0 {
			stats.invalid++
		}
	}
	if want.NeedsRekey {
		stats.rekey++
	}
	// Any remaining member re-keys after the merge: the result is sound.
	if len(want.Members) > 0 {
		m := want.Members[rng.IntN(len(want.Members))]
		var dev *identity.Device
		for _, d := range devs {
			if d.ID() == m.Device {
				dev = d
			}
		}
		c, err := want.NextCommit(dev.ID())
		if err != nil {
			t.Fatalf("seed %d: re-key by a member: %v", seed, err)
		}
		mustAdd(t, ref, newOp(dev, team, hlcAt(sec+10, 0), ref.Heads(), KindMember, c.Marshal()))
		if st := ref.State(); st.NeedsRekey || st.Current != len(st.Epochs)-1 {
			t.Errorf("seed %d: after a re-key by a member: NeedsRekey %v, Current %d of %d", seed, st.NeedsRekey, st.Current, len(st.Epochs))
		}
	}
	t.Logf("seed %d: %d ops, %d persons, %d epochs, current %d, %+v",
		seed, len(all), len(want.Persons), len(want.Epochs), want.Current, stats)
	return stats
}

// bigLog builds a log of about n ops: ten members writing messages on three
// branches (forks that merge every 50 ops), a re-key on a branch every 500
// ops, and every 2,000 ops a removal on one branch (the removed member
// writes on the others until the merge) followed by a re-add at a merge.
func bigLog(b testing.TB, n int) *Log {
	r := detRand(99)
	devs := make([]*identity.Device, 10)
	for i := range devs {
		devs[i] = newDevice(b, r)
	}
	team, _ := NewTeamID(r)
	l := NewLog(team)
	sec := 0
	put := func(d *identity.Device, parents []OpID, kind Kind, body []byte) OpID {
		sec++
		op := newOp(d, team, MakeHLC(t0.Add(time.Duration(sec)*time.Millisecond), 0), parents, kind, body)
		if _, err := l.Add(op); err != nil {
			b.Fatal(err)
		}
		return op.ID()
	}
	// Commits made by hand (NextCommit would need the State of a growing
	// log each time): one epoch number counter, recipients from present.
	num := uint32(1)
	present := map[int]bool{0: true}
	commit := func(d *identity.Device, parents []OpID, changes ...Change) OpID {
		num++
		c := Commit{Number: num, Changes: changes}
		for i := range devs {
			if present[i] {
				c.Recipients = append(c.Recipients, recipient(devs[i]))
			}
		}
		slices.SortFunc(c.Recipients, func(a, b Recipient) int { return compareDevice(a.Device, b.Device) })
		return put(d, parents, KindMember, c.Marshal())
	}
	head := put(devs[0], nil, KindCreate, Create{Name: "T", Kind: Clinical, Creator: info(devs[0], "d0", true)}.Marshal())
	for i, d := range devs[1:] {
		present[i+1] = true
		head = commit(devs[0], []OpID{head}, Change{Action: ActAdd, Info: info(d, fmt.Sprintf("d%d", i+1), false)})
	}
	tips := []OpID{head, head, head}
	out := -1 // the member removed until the next re-add
	rng := rand.New(rand.NewPCG(1, 2))
	for l.Len() < n {
		k := l.Len()
		switch {
		case k%2000 == 0 && out < 0: // a removal on branch 0
			out = 1 + rng.IntN(len(devs)-1)
			present[out] = false
			tips[0] = commit(devs[0], []OpID{tips[0]}, Change{Action: ActRemove, Target: devs[out].ID()})
		case k%500 == 0: // a re-key on a branch, by anyone still a member there
			tips[1] = commit(devs[2], []OpID{tips[1]})
		case k%50 == 0: // merge
			head = put(devs[0], slices.Clone(tips), KindMessage, Message{Text: "merge"}.Marshal())
			if out >= 0 {
				present[out] = true
				head = commit(devs[0], []OpID{head}, Change{Action: ActAdd, Info: info(devs[out], "back", false)})
				out = -1
			}
			tips = []OpID{head, head, head}
		default:
			br := rng.IntN(3)
			a := rng.IntN(len(devs))
			if a == out && br == 0 {
				a = 0
			}
			tips[br] = put(devs[a], []OpID{tips[br]}, KindMessage, Message{Text: "obs", Priority: Routine}.Marshal())
		}
	}
	return l
}

// BenchmarkStateMembership measures Log.State of large logs with forks,
// removals and re-keys, and reports it as a ratio ("x-decode") to decoding
// every message body of the same log once, timed right after each State so
// that both see the same load (ns/op counts both; state-ms is State alone).
func BenchmarkStateMembership(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			l := bigLog(b, n)
			st := l.State()
			var stateT, decodeT time.Duration
			for b.Loop() {
				start := time.Now()
				l.state, l.memo = nil, nil
				_ = l.State()
				stateT += time.Since(start)
				start = time.Now()
				for _, op := range l.ops {
					if op.Kind == KindMessage {
						_, _ = UnmarshalMessage(op.Body)
					}
				}
				decodeT += time.Since(start)
			}
			b.ReportMetric(float64(stateT)/float64(decodeT), "x-decode")
			b.ReportMetric(stateT.Seconds()*1000/float64(b.N), "state-ms")
			b.ReportMetric(float64(len(st.Epochs)), "epochs")
			b.ReportMetric(float64(len(st.Messages)), "msgs")
		})
	}
}
