package teamkeys_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// TestRandomDelivery delivers two senders' messages to a receiver in a
// random order, each several times, sometimes only opened (OpenChain, as
// a device does before it judges the op) and consumed later or never,
// with restarts from the persisted state (Marshal, Unmarshal) in between.
// It checks what Keys promises whatever the order: an envelope opens to
// its sealed op, as often as asked, until its key is consumed; a consume
// succeeds once per envelope; after it every open and consume is
// ErrReplay; an open that is not consumed changes nothing; and in the end
// every envelope was consumed exactly once and no key is left.
func TestRandomDelivery(t *testing.T) {
	const histories, perSender = 20, 40
	for seed := range uint64(histories) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { randomDelivery(t, seed, perSender) })
	}
}

func randomDelivery(t *testing.T, seed uint64, perSender int) {
	rng := rand.New(rand.NewPCG(seed, 0x7c))
	w := newWorld(t, "alice", "bob", "carol")
	w.create("alice")
	commit2, c2Env := w.commit("alice", 2, "alice", "bob", "carol")
	c2 := commit2.ID()
	w.mustLearn("bob", c2Env, commit2)
	w.mustLearn("carol", c2Env, commit2)
	type msg struct {
		op  *crdt.Op
		e   *envelope.Envelope
		got int // consumes that succeeded
	}
	var msgs []*msg
	for i := range perSender {
		for _, from := range []string{"alice", "carol"} {
			op, e := w.msg(from, c2, fmt.Sprintf("%s %d", from, i))
			msgs = append(msgs, &msg{op: op, e: e})
		}
	}
	var deliveries []*msg
	for _, m := range msgs {
		for range 1 + rng.IntN(3) {
			deliveries = append(deliveries, m)
		}
	}
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	type deferred struct {
		m *msg
		o *teamkeys.Opened
	}
	var later []deferred // opened, to be consumed later (if at all)
	consume := func(m *msg, o *teamkeys.Opened) {
		t.Helper()
		err := w.keys["bob"].Consume(o)
		switch {
		case m.got == 0 && err != nil:
			t.Fatalf("seed %d: Consume of %v: %v", seed, m.e.ID.Short(), err)
		case m.got > 0 && !errors.Is(err, teamkeys.ErrReplay):
			t.Fatalf("seed %d: Consume of %v again: got %v; want ErrReplay", seed, m.e.ID.Short(), err)
		}
		if err == nil {
			m.got++
		}
	}
	deliver := func(m *msg, mode int) {
		t.Helper()
		bob := w.keys["bob"]
		before := bob.Marshal()
		o, err := bob.OpenChain(w.wire(m.e))
		if !bytes.Equal(before, bob.Marshal()) {
			t.Fatalf("seed %d: OpenChain changed the state", seed)
		}
		if m.got > 0 {
			if !errors.Is(err, teamkeys.ErrReplay) || o == nil || o.Op != nil || o.Sender != m.op.Author || o.Index != m.op.Seal.Index {
				t.Fatalf("seed %d: a consumed envelope: got %+v, %v; want who and where, ErrReplay", seed, o, err)
			}
			return
		}
		if err != nil || !reflect.DeepEqual(o.Op, m.op) || o.Epoch != c2 {
			t.Fatalf("seed %d: OpenChain of %v: got %+v, %v; want the sealed op", seed, m.e.ID.Short(), o, err)
		}
		switch mode {
		case 0: // judged at once
			consume(m, o)
		case 1: // judged later
			later = append(later, deferred{m, o})
		} // 2: opened and dropped (judged invalid, or the device crashed)
	}
	for _, m := range deliveries {
		deliver(m, rng.IntN(3))
		if len(later) > 0 && rng.IntN(4) == 0 {
			i := rng.IntN(len(later))
			consume(later[i].m, later[i].o)
			later = append(later[:i], later[i+1:]...)
		}
		if rng.IntN(20) == 0 { // restart from the persisted state
			k, err := teamkeys.Unmarshal(w.team, w.devs["bob"], w.keys["bob"].Marshal())
			if err != nil {
				t.Fatalf("seed %d: restart: %v", seed, err)
			}
			w.keys["bob"] = k
		}
	}
	for _, d := range later {
		consume(d.m, d.o)
	}
	for _, m := range msgs {
		if m.got == 0 {
			deliver(m, 0)
		}
	}
	bob := w.keys["bob"]
	for _, m := range msgs {
		if m.got != 1 {
			t.Errorf("seed %d: %v consumed %d times; want once", seed, m.e.ID.Short(), m.got)
		}
		if bob.CanOpen(c2, m.op.Author, m.op.Seal.Index) {
			t.Errorf("seed %d: the key of %v is still held", seed, m.e.ID.Short())
		}
	}
	for _, from := range []identity.DeviceID{w.devs["alice"].ID(), w.devs["carol"].ID()} {
		if !bob.CanOpen(c2, from, uint32(perSender)) {
			t.Errorf("seed %d: the next index of %v cannot be opened", seed, from.Short())
		}
	}
}
