package lowdata

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

func newTestStore(t *testing.T) *storage.Store {
	t.Helper()
	// A cheap Argon2id keeps the tests fast; production uses the defaults.
	st, err := storage.Create(t.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newDevice(t *testing.T) *identity.Device {
	t.Helper()
	d, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func message(dev *identity.Device, team crdt.TeamID, at crdt.HLC, p crdt.Priority) *crdt.Op {
	return crdt.NewOp(dev, team, at, nil, crdt.KindMessage, crdt.Message{Text: fmt.Sprint("at ", at), Priority: p}.Marshal())
}

func TestDeferrable(t *testing.T) {
	dev := newDevice(t)
	msg := func(p crdt.Priority) *crdt.Op { return message(dev, crdt.TeamID{}, 1, p) }
	for _, c := range []struct {
		name string
		op   *crdt.Op
		want bool
	}{
		{"routine message", msg(crdt.Routine), true},
		{"urgent message", msg(crdt.Urgent), false},
		{"emergency message", msg(crdt.Emergency), false},
		{"ack", crdt.NewOp(dev, crdt.TeamID{}, 1, nil, crdt.KindAck, crdt.Ack{IDs: []crdt.OpID{{1}}}.Marshal()), true},
		{"membership", crdt.NewOp(dev, crdt.TeamID{}, 1, nil, crdt.KindMember, []byte{1}), false},
		{"undecodable message", crdt.NewOp(dev, crdt.TeamID{}, 1, nil, crdt.KindMessage, []byte{0xff}), false},
	} {
		if got := deferrable(c.op); got != c.want {
			t.Errorf("%s: deferrable = %v; want %v", c.name, got, c.want)
		}
	}
}

// TestModeMarks: the mode and the urgent marks survive a reload; Defer queues only what can wait,
// and only while the mode is on; AutoSync follows the marks; turning the mode off drops them.
func TestModeMarks(t *testing.T) {
	st := newTestStore(t)
	dev := newDevice(t)
	var team crdt.TeamID
	team[0] = 1
	topic := envelope.TopicOf(team)
	m := New(st, dev.ID(), nil)
	if on, err := m.Load(false); err != nil || on {
		t.Fatalf("Load with nothing stored = %v, %v; want off", on, err)
	}
	if q, err := m.Defer(topic, message(dev, team, 1, crdt.Routine)); err != nil || q {
		t.Errorf("Defer with the mode off = %v, %v; want not queued", q, err)
	}
	if !m.AutoSync(topic) {
		t.Error("AutoSync refused with the mode off")
	}
	if was, err := m.Set(true); err != nil || was {
		t.Fatalf("Set(true) = %v, %v; want was off", was, err)
	}
	if m.AutoSync(topic) {
		t.Error("AutoSync allowed in low-data mode with nothing urgent")
	}
	if q, err := m.Defer(topic, message(dev, team, 2, crdt.Routine)); err != nil || !q {
		t.Errorf("Defer of a routine message = %v, %v; want queued", q, err)
	}
	if q, err := m.Defer(topic, message(dev, team, 3, crdt.Emergency)); err != nil || q {
		t.Errorf("Defer of an emergency message = %v, %v; want sent", q, err)
	}
	if s, err := m.Status(); err != nil || s != (Status{On: true, Queued: 1, UrgentTeams: 1}) || !m.AutoSync(topic) {
		t.Errorf("status %+v, %v, AutoSync %v; want on, 1 queued, 1 urgent team, allowed", s, err, m.AutoSync(topic))
	}

	m2 := New(st, dev.ID(), nil)
	if on, err := m2.Load(false); err != nil || !on || !m2.AutoSync(topic) {
		t.Fatalf("reload = %v, %v, AutoSync %v; want on with the urgent mark", on, err, m2.AutoSync(topic))
	}
	if err := m2.Synced(topic); err != nil || m2.AutoSync(topic) {
		t.Errorf("Synced = %v, AutoSync %v; want the mark cleared", err, m2.AutoSync(topic))
	}
	if q, err := m2.Defer(topic, message(dev, team, 4, crdt.Urgent)); err != nil || q || !m2.AutoSync(topic) {
		t.Errorf("Defer of an urgent message = %v, %v; want sent and the team marked", q, err)
	}
	if was, err := m2.Set(false); err != nil || !was {
		t.Fatalf("Set(false) = %v, %v; want was on", was, err)
	}
	if s, err := m2.Status(); err != nil || s != (Status{Queued: 1}) {
		t.Errorf("status after Set(false) %+v, %v; want off, 1 queued, no urgent team", s, err)
	}

	// Load(true) forces the mode on, durably.
	m3 := New(st, dev.ID(), nil)
	if on, err := m3.Load(true); err != nil || !on {
		t.Fatalf("Load(true) = %v, %v; want on", on, err)
	}
	if on, err := New(st, dev.ID(), nil).Load(false); err != nil || !on {
		t.Errorf("reload after Load(true) = %v, %v; want on", on, err)
	}
}

// TestSetFailureLeavesModeUnchanged: a mode that cannot be stored is not changed in memory either.
func TestSetFailureLeavesModeUnchanged(t *testing.T) {
	st := newTestStore(t)
	dev := newDevice(t)
	var team crdt.TeamID
	topic := envelope.TopicOf(team)
	m := New(st, dev.ID(), nil)
	if _, err := m.Set(true); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Defer(topic, message(dev, team, 1, crdt.Urgent)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := m.Set(false); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Set(false) on a closed store: %v; want ErrClosed", err)
	}
	if !m.On() || !m.AutoSync(topic) {
		t.Errorf("after a failed Set(false): on %v, AutoSync %v; want on, still urgent", m.On(), m.AutoSync(topic))
	}
	if _, err := m.Defer(topic, message(dev, team, 2, crdt.Routine)); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Defer on a closed store: %v; want ErrClosed", err)
	}
}

// TestFlush: queued ops go to the publisher in the order they were made, each once; a publish error
// keeps that team's later ops queued while other teams go on; ops already published, of a team
// gone, or not this device's are only dropped; the flush stops when the mode goes back on.
func TestFlush(t *testing.T) {
	st := newTestStore(t)
	dev, other := newDevice(t), newDevice(t)
	var ta, tb, gone crdt.TeamID
	ta[0], tb[0], gone[0] = 1, 2, 3
	m := New(st, dev.ID(), nil)
	if _, err := m.Set(true); err != nil {
		t.Fatal(err)
	}
	queue := func(op *crdt.Op) *crdt.Op {
		t.Helper()
		if q, err := m.Defer(envelope.TopicOf(op.Team), op); err != nil || !q {
			t.Fatalf("Defer = %v, %v; want queued", q, err)
		}
		return op
	}
	a1, b1 := queue(message(dev, ta, 10, crdt.Routine)), queue(message(dev, tb, 11, crdt.Routine))
	a2, b2 := queue(message(dev, ta, 12, crdt.Routine)), queue(message(dev, tb, 13, crdt.Routine))
	g := queue(message(dev, gone, 14, crdt.Routine))
	foreign := message(other, ta, 15, crdt.Routine) // not this device's: unreadable here
	if err := st.PutOutbox(storage.OutboxKey{Time: 15, ID: foreign.ID()}, foreign.MarshalContent()); err != nil {
		t.Fatal(err)
	}
	if n, err := m.Flush(func(*crdt.Op) (bool, error) { t.Error("published in low-data mode"); return true, nil }); err != nil || n != 0 {
		t.Errorf("Flush with the mode on = %d, %v; want 0", n, err)
	}
	if _, err := m.Set(false); err != nil {
		t.Fatal(err)
	}

	var got []crdt.OpID
	failA := errors.New("team a is broken")
	n, err := m.Flush(func(op *crdt.Op) (bool, error) {
		got = append(got, op.ID())
		switch {
		case op.Team == ta:
			return false, failA
		case op.Team == gone:
			return false, ErrNoTeam
		case op.ID() == b2.ID():
			return false, nil // already in the log
		}
		return true, nil
	})
	if !errors.Is(err, failA) || n != 1 {
		t.Errorf("Flush = %d, %v; want 1 published and team a's error", n, err)
	}
	if want := []crdt.OpID{a1.ID(), b1.ID(), b2.ID(), g.ID()}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("publisher saw %x; want %x (a2 held behind a1, the foreign op never)", got, want)
	}
	var left []crdt.OpID
	if err := st.Outbox(func(k storage.OutboxKey, _ []byte) error { left = append(left, k.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []crdt.OpID{a1.ID(), a2.ID()}; fmt.Sprint(left) != fmt.Sprint(want) {
		t.Errorf("outbox holds %x; want team a's two ops", left)
	}
	got = nil
	if n, err := m.Flush(func(op *crdt.Op) (bool, error) { got = append(got, op.ID()); return true, nil }); err != nil || n != 2 {
		t.Errorf("second Flush = %d, %v; want team a's 2 ops", n, err)
	}
	if want := []crdt.OpID{a1.ID(), a2.ID()}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("second flush published %x; want %x in order", got, want)
	}
	if s, err := m.Status(); err != nil || s.Queued != 0 {
		t.Errorf("status %+v, %v; want nothing queued", s, err)
	}

	// The mode going back on stops a flush between two ops.
	if _, err := m.Set(true); err != nil {
		t.Fatal(err)
	}
	queue(message(dev, ta, 20, crdt.Routine))
	queue(message(dev, ta, 21, crdt.Routine))
	if _, err := m.Set(false); err != nil {
		t.Fatal(err)
	}
	n, err = m.Flush(func(*crdt.Op) (bool, error) {
		if _, err := m.Set(true); err != nil {
			t.Error(err)
		}
		return true, nil
	})
	if s, _ := m.Status(); err != nil || n != 1 || s.Queued != 1 {
		t.Errorf("Flush interrupted by Set(true) = %d, %v, %d queued; want 1 published, 1 queued", n, err, s.Queued)
	}
}

func TestSettingEncoding(t *testing.T) {
	var t1, t2 envelope.Topic
	t1[0], t2[0] = 1, 2
	for _, c := range []struct {
		on     bool
		urgent map[envelope.Topic]struct{}
	}{
		{false, map[envelope.Topic]struct{}{}},
		{true, map[envelope.Topic]struct{}{t2: {}, t1: {}}},
	} {
		b := marshalSetting(c.on, c.urgent)
		on, urgent, err := unmarshalSetting(b)
		if err != nil || on != c.on || fmt.Sprint(urgent) != fmt.Sprint(c.urgent) {
			t.Errorf("round trip of %v %v: %v %v %v", c.on, c.urgent, on, urgent, err)
		}
	}
	good := marshalSetting(true, map[envelope.Topic]struct{}{t1: {}, t2: {}})
	swapped := append(append(bytes.Clone(good[:3]), t2[:]...), t1[:]...)
	for name, b := range map[string][]byte{
		"empty":       nil,
		"version 2":   {2, 0, 0},
		"flag 2":      {1, 2, 0},
		"truncated":   good[:len(good)-1],
		"trailing":    append(bytes.Clone(good), 0),
		"unsorted":    swapped,
		"long varint": {1, 0, 0x80, 0x00},
	} {
		if _, _, err := unmarshalSetting(b); err == nil {
			t.Errorf("%s: decoded; want an error", name)
		}
	}
}

func FuzzSetting(f *testing.F) {
	var t1 envelope.Topic
	t1[3] = 7
	f.Add(marshalSetting(true, map[envelope.Topic]struct{}{t1: {}}))
	f.Add(marshalSetting(false, nil))
	f.Add([]byte{1, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		on, urgent, err := unmarshalSetting(b)
		if err != nil {
			return
		}
		if got := marshalSetting(on, urgent); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\ngot  %x\nwant %x", got, b)
		}
	})
}

// TestQueued: Queued lists one team's queued ops in publishing order, and nothing of other teams,
// of other devices, or that does not decode.
func TestQueued(t *testing.T) {
	st := newTestStore(t)
	dev, other := newDevice(t), newDevice(t)
	var team, team2 crdt.TeamID
	team[0], team2[0] = 1, 2
	m := New(st, dev.ID(), nil)
	if _, err := m.Load(true); err != nil {
		t.Fatal(err)
	}
	late, early := message(dev, team, 20, crdt.Routine), message(dev, team, 10, crdt.Routine)
	for _, op := range []*crdt.Op{late, message(dev, team2, 15, crdt.Routine), early} {
		if q, err := m.Defer(envelope.TopicOf(op.Team), op); err != nil || !q {
			t.Fatalf("Defer = %v, %v; want queued", q, err)
		}
	}
	foreign := message(other, team, 12, crdt.Routine)
	if err := st.PutOutbox(storage.OutboxKey{Time: 12, ID: foreign.ID()}, foreign.MarshalContent()); err != nil {
		t.Fatal(err)
	}
	if err := st.PutOutbox(storage.OutboxKey{Time: 13, ID: crdt.OpID{9}}, []byte("not an op")); err != nil {
		t.Fatal(err)
	}
	ops, err := m.Queued(team)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[0].ID() != early.ID() || ops[1].ID() != late.ID() {
		t.Errorf("Queued = %d ops; want the team's 2 of this device, earliest first", len(ops))
	}
}
