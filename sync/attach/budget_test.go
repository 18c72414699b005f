package attach

import (
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

func TestEvictable(t *testing.T) {
	me, other := identity.DeviceID{1}, identity.DeviceID{2}
	filed := &crdt.FiledView{Ref: "Communication/1"}
	msg := func(author identity.DeviceID, p crdt.Priority, readBy ...identity.DeviceID) crdt.MessageView {
		return crdt.MessageView{Author: author, Message: crdt.Message{Priority: p}, ReadBy: readBy}
	}
	withFiled := func(m crdt.MessageView) crdt.MessageView { m.Filed = filed; return m }
	for _, c := range []struct {
		name       string
		m          crdt.MessageView
		relayHolds bool
		want       bool
	}{
		{"another's, unread", msg(other, crdt.Routine), false, false},
		{"another's, read by a third", msg(other, crdt.Routine, identity.DeviceID{3}), true, false},
		{"another's, read", msg(other, crdt.Routine, me), false, true},
		{"another's urgent, unread", msg(other, crdt.Urgent), true, false},
		{"another's emergency, read", msg(other, crdt.Emergency, me), false, true},
		{"another's, unread, filed", withFiled(msg(other, crdt.Routine)), false, true},
		{"own, read by nobody", msg(me, crdt.Routine), false, false},
		{"own, read by nobody, at a relay", msg(me, crdt.Routine), true, true},
		{"own, read", msg(me, crdt.Routine, other), false, true},
		{"own urgent, unacknowledged, at a relay", msg(me, crdt.Urgent), true, false},
		{"own urgent, read", msg(me, crdt.Urgent, other), false, true},
		{"own urgent, filed", withFiled(msg(me, crdt.Urgent)), false, true},
	} {
		if got := Evictable(c.m, me, c.relayHolds); got != c.want {
			t.Errorf("%s: Evictable = %v; want %v", c.name, got, c.want)
		}
	}
}

func TestOverBudget(t *testing.T) {
	id := func(b byte) crdt.OpID { return crdt.OpID{b} }
	held := []Held{
		{Message: id(1), Time: 50, Bytes: 100, Evictable: true},
		{Message: id(2), Time: 10, Bytes: 100, Evictable: false}, // the oldest, unread
		{Message: id(3), Time: 20, Bytes: 100, Evictable: true},
		{Message: id(4), Time: 30, Bytes: 0, Evictable: true}, // holds nothing
		{Message: id(5), Time: 20, Bytes: 100, Evictable: true},
	}
	for _, c := range []struct {
		budget int64
		want   []crdt.OpID
	}{
		{500, nil},
		{400, nil},
		{350, []crdt.OpID{id(3)}},
		{250, []crdt.OpID{id(3), id(5)}},
		{200, []crdt.OpID{id(3), id(5)}},
		{150, []crdt.OpID{id(3), id(5), id(1)}},
		{1, []crdt.OpID{id(3), id(5), id(1)}}, // over budget still: the unread one stays
		{0, nil},
		{-1, nil},
	} {
		if got := OverBudget(held, c.budget); !slices.Equal(got, c.want) {
			t.Errorf("budget %d: evict %v; want %v", c.budget, got, c.want)
		}
	}
}
