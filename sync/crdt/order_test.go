package crdt

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

func TestDisplayOrder(t *testing.T) {
	r := detRand(59)
	a := newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := createOp(a, team, hlcAt(0, 0), "T")
	// spec: one message per letter: its time in seconds after t0, the
	// letter it replies to, the letters of its parents (besides the
	// genesis). Messages are made in the order given.
	type spec struct {
		name    byte
		sec     int
		replyTo byte
		parents string
	}
	tests := []struct {
		name  string
		specs []spec
		want  string
	}{
		{"by time", []spec{{'c', 3, 0, ""}, {'a', 1, 0, ""}, {'b', 2, 'a', ""}}, "abc"},
		{"reply to a message from the future", []spec{{'f', 86400, 0, ""}, {'r', 1, 'f', ""}, {'x', 2, 0, ""}}, "xfr"},
		{"and its children", []spec{{'f', 86400, 0, ""}, {'r', 1, 'f', ""}, {'c', 2, 0, "r"}, {'d', 3, 0, "c"}, {'x', 4, 0, ""}}, "xfrcd"},
		{"chain", []spec{{'k', 172800, 0, ""}, {'j', 10, 'k', ""}, {'x', 15, 0, ""}, {'i', 20, 'j', ""}, {'y', 30, 0, ""}}, "xykji"},
		{"a later reply keeps its place", []spec{{'a', 1, 0, ""}, {'f', 3, 0, ""}, {'r', 5, 'f', ""}, {'b', 4, 0, ""}}, "afbr"},
	}
	for _, tt := range tests {
		ops := []*Op{gen}
		ids := map[byte]OpID{}
		for _, s := range tt.specs {
			m := Message{Text: string(s.name)}
			if s.replyTo != 0 {
				id := ids[s.replyTo]
				m.ReplyTo = &id
			}
			ps := []OpID{gen.ID()}
			for _, p := range []byte(s.parents) {
				ps = append(ps, ids[p])
			}
			op := newOp(a, team, hlcAt(s.sec, 0), ps, KindMessage, m.Marshal())
			ids[s.name] = op.ID()
			ops = append(ops, op)
		}
		for _, reverse := range []bool{false, true} {
			if reverse {
				slices.Reverse(ops)
			}
			l := NewLog(team)
			mustAdd(t, l, ops...)
			var got string
			for _, m := range l.State().Messages {
				got += m.Text
			}
			if got != tt.want {
				t.Errorf("%s: got %q; want %q", tt.name, got, tt.want)
			}
		}
	}
}

func TestHeadsBefore(t *testing.T) {
	r := detRand(60)
	a := newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := createOp(a, team, hlcAt(0, 0), "T")
	m1 := messageOp(a, team, hlcAt(1, 0), []OpID{gen.ID()}, "one")
	future := messageOp(a, team, hlcAt(86400, 0), []OpID{m1.ID()}, "tomorrow")
	m2 := messageOp(a, team, hlcAt(2, 0), []OpID{m1.ID()}, "two")
	l := NewLog(team)
	mustAdd(t, l, gen, m1, future)
	steps := []struct {
		name string
		t    HLC
		want []OpID
	}{
		{"after every head", hlcAt(90000, 0), []OpID{future.ID()}},
		{"before the future head", hlcAt(3, 0), []OpID{m1.ID()}},
		{"at the future head's time", future.Time, []OpID{m1.ID()}},
		{"at m1's time", m1.Time, []OpID{gen.ID()}},
		{"before everything", hlcAt(0, 0), nil},
	}
	for _, s := range steps {
		if got := l.HeadsBefore(s.t); !reflect.DeepEqual(got, s.want) {
			t.Errorf("%s: got %v; want %v", s.name, got, s.want)
		}
	}
	mustAdd(t, l, m2)
	if got, want := l.HeadsBefore(hlcAt(3, 0)), []OpID{m2.ID()}; !reflect.DeepEqual(got, want) {
		t.Errorf("with m2: got %v; want %v", got, want)
	}
	// An op made with HeadsBefore is possible and shown.
	tm := hlcAt(4, 0)
	m3 := messageOp(a, team, tm, l.HeadsBefore(tm), "three")
	mustAdd(t, l, m3)
	if got := len(l.impossible()); got != 0 {
		t.Errorf("impossible ops: got %d; want 0", got)
	}
	if got := len(l.State().Messages); got != 4 {
		t.Errorf("messages: got %d; want 4", got)
	}
}

// TestSkewedTeam runs a team whose devices' wall clocks are right, a day
// ahead, a day behind and in 1970 (after a restart), exchanging messages
// and replies through the clock and HeadsBefore as a node would, and checks
// that no op is impossible, every message is shown, replies and children
// come after what they answer, and only the quorum moves clocks.
func TestSkewedTeam(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { skewedTeam(t, seed) })
	}
}

func skewedTeam(t *testing.T, seed uint64) {
	T := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	r := detRand(61 + seed)
	rng := rand.New(rand.NewPCG(61, seed))
	type device struct {
		name  string
		dev   *identity.Device
		skew  time.Duration
		clock *Clock
		log   *Log
	}
	now := T
	skews := []struct {
		name string
		skew time.Duration
	}{
		{"right", 0}, {"right2", 2 * time.Second}, {"ahead", 24 * time.Hour}, {"behind", -24 * time.Hour},
		{"1970", -now.Sub(time.Unix(0, 0))},
	}
	team, _ := NewTeamID(r)
	var devs []*device
	for _, s := range skews {
		d := &device{name: s.name, dev: newDevice(t, r), skew: s.skew, log: NewLog(team)}
		d.clock = &Clock{Now: func() time.Time { return now.Add(d.skew) }}
		devs = append(devs, d)
	}
	// The creator (right clock) founds the team and adds everyone.
	var all []*Op
	deliver := func(from *device, op *Op) {
		all = append(all, op)
		for _, d := range devs {
			mustAdd(t, d.log, op)
			if d == from {
				continue
			}
			d.clock.ObserveFrom(op.Author, op.Time)
		}
	}
	make1 := func(d *device, kind Kind, body []byte) *Op {
		tm := d.clock.Next()
		op := newOp(d.dev, team, tm, d.log.HeadsBefore(tm), kind, body)
		deliver(d, op)
		return op
	}
	c := devs[0]
	make1(c, KindCreate, Create{Name: "T", Kind: Clinical, Creator: info(c.dev, c.name, true)}.Marshal())
	for _, d := range devs[1:] {
		cm, err := c.log.State().NextCommit(c.dev.ID(), Change{Action: ActAdd, Info: info(d.dev, d.name, false)})
		if err != nil {
			t.Fatal(err)
		}
		make1(c, KindMember, cm.Marshal())
	}
	var msgs []OpID
	for step := range 400 {
		now = now.Add(time.Duration(rng.IntN(120)) * time.Second)
		d := devs[rng.IntN(len(devs))]
		if step == 200 { // the 1970 device restarts: a new clock, its own ops restored
			d = devs[4]
			d.clock = &Clock{Now: d.clock.Now}
			for _, op := range d.log.Ops() {
				if op.Author == d.dev.ID() {
					d.clock.ObserveOwn(op.Time)
				} else {
					d.clock.ObserveFrom(op.Author, op.Time)
				}
			}
		}
		m := Message{Text: d.name}
		if len(msgs) > 0 && rng.IntN(2) == 0 {
			id := msgs[rng.IntN(len(msgs))]
			m.ReplyTo = &id
		}
		msgs = append(msgs, make1(d, KindMessage, m.Marshal()).ID())
	}

	l := devs[0].log
	if got := len(l.impossible()); got != 0 {
		t.Errorf("impossible ops: got %d; want 0", got)
	}
	s := l.State()
	if got, want := len(s.Messages), len(msgs); got != want {
		t.Fatalf("messages shown: got %d; want %d", got, want)
	}
	pos := make(map[OpID]int)
	for i, m := range s.Messages {
		pos[m.ID] = i
	}
	for _, op := range all {
		i, ok := pos[op.ID()]
		if !ok {
			continue
		}
		for _, p := range op.Parents {
			if j, ok := pos[p]; ok && j >= i {
				t.Errorf("message %d listed before its parent %d", i, j)
			}
		}
		if m := s.Messages[i]; m.ReplyTo != nil && pos[*m.ReplyTo] >= i {
			t.Errorf("reply %d listed before the message it answers, %d", i, pos[*m.ReplyTo])
		}
	}
	for _, d := range devs {
		if d2 := d.log.State(); !reflect.DeepEqual(d2, s) {
			t.Errorf("%s: a different state", d.name)
		}
	}
	// The behind and 1970 devices caught up with the team; the right ones
	// were not dragged a day ahead.
	for _, d := range devs {
		last := d.clock.Next().Time()
		switch d.name {
		case "ahead":
			continue
		case "right", "right2", "behind", "1970":
			if last.Before(now.Add(-2*time.Hour)) || last.After(now.Add(2*time.Hour)) {
				t.Errorf("%s: clock at %v; want about %v", d.name, last.UTC(), now.UTC())
			}
		}
	}
}
