package crdt

import (
	"bytes"
	"reflect"
	"testing"
	"unsafe"
)

// TestPool: logs of one Pool hold one copy of an op they both added, and
// one decoded body of a message; an op with the same id sealed elsewhere is
// kept as its own; a log that redacts a shared message leaves the other
// log's copy whole (and wipes a copy of its own); and pooled logs show the
// same State as unpooled ones.
func TestPool(t *testing.T) {
	r := detRand(57)
	a := newDevice(t, r)
	team, _ := NewTeamID(r)
	gen := newOp(a, team, hlcAt(0, 0), nil, KindCreate, Create{Name: "T", Kind: Clinical, Creator: info(a, "Mia", true)}.Marshal())
	msg := newOp(a, team, hlcAt(1, 0), []OpID{gen.ID()}, KindMessage, Message{Text: "POOLED bed 4", Patient: "MRN-7"}.Marshal())
	other := newOp(a, team, hlcAt(2, 0), []OpID{msg.ID()}, KindMessage, Message{Text: "kept"}.Marshal())
	// other, sealed at another chain position: the same op id, another seal.
	resealed := other.Clone()
	resealed.Sign(a, 0, 9, InnerHash{})
	if resealed.ID() != other.ID() || bytes.Equal(resealed.Seal.Sig, other.Seal.Sig) {
		t.Fatal("the resealed op should keep its id and change its seal")
	}

	pool := NewPool()
	l1, l2 := NewPooledLog(team, pool), NewPooledLog(team, pool)
	mustAdd(t, l1, gen, msg, other)
	mustAdd(t, l2, gen, msg, resealed)
	plain := NewLog(team)
	mustAdd(t, plain, gen, msg, other)

	if l1.ops[msg.ID()] != l2.ops[msg.ID()] || l1.ops[gen.ID()] != l2.ops[gen.ID()] {
		t.Error("two logs of a pool hold their own copies of the same op")
	}
	if l1.ops[msg.ID()] == msg {
		t.Error("the pool keeps the caller's op, not a copy")
	}
	if l1.ops[other.ID()] == l2.ops[other.ID()] || !bytes.Equal(l2.ops[other.ID()].Seal.Sig, resealed.Seal.Sig) {
		t.Error("an op sealed elsewhere was shared as the pool's copy")
	}
	s1, s2, sp := l1.State(), l2.State(), plain.State()
	if !reflect.DeepEqual(s1, sp) {
		t.Errorf("a pooled log shows another state:\npooled %+v\nplain  %+v", s1, sp)
	}
	text := func(s State, id OpID) *byte {
		for _, m := range s.Messages {
			if m.ID == id {
				return unsafe.StringData(m.Text)
			}
		}
		t.Fatalf("message %s not shown", id.Short())
		return nil
	}
	if text(s1, msg.ID()) != text(s2, msg.ID()) {
		t.Error("two logs of a pool decoded the same message body twice")
	}

	if !l1.Redact(msg.ID()) {
		t.Fatal("Redact of a shared message")
	}
	kept, _ := l2.Op(msg.ID())
	if !bytes.Equal(kept.Body, msg.Body) {
		t.Fatal("redacting in one log wiped the other log's copy")
	}
	if ms := l1.State().Messages; len(ms) != 1 || ms[0].Text != "kept" {
		t.Errorf("l1 after Redact shows %+v; want the kept one only", ms)
	}
	if ms := l2.State().Messages; len(ms) != 2 {
		t.Errorf("l2 shows %d messages after l1 redacted one; want 2", len(ms))
	}
	// A copy of its own (the resealed op in l2) is wiped as in an unpooled log.
	own := l2.ops[other.ID()]
	body := own.Body
	if !l2.Redact(other.ID()) {
		t.Fatal("Redact of an own copy")
	}
	if !bytes.Equal(body, make([]byte, len(body))) {
		t.Error("Redact left the body of the log's own copy in memory")
	}
	if got, _ := l1.Op(other.ID()); !bytes.Equal(got.Body, other.Body) {
		t.Error("redacting l2's own copy touched l1's")
	}
}
