package wipeproto

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

func TestDecodeFetchKeepsOnlyOwnOrders(t *testing.T) {
	admin, _ := identity.Generate(nil)
	me, _ := identity.Generate(nil)
	other, _ := identity.Generate(nil)
	mine, err := wipeorder.Issue(admin, me.ID(), time.Now(), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := wipeorder.Issue(admin, other.ID(), time.Now(), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	ans := binary.AppendUvarint(nil, 2)
	ans = append(append(ans, theirs.Bytes()...), mine.Bytes()...)
	got, err := DecodeFetch(ans, me.ID())
	if err != nil || len(got) != 1 || got[0].Key() != mine.Key() {
		t.Fatalf("DecodeFetch: %d orders, %v; want only the one naming this device", len(got), err)
	}
	for name, b := range map[string][]byte{
		"empty":        nil,
		"count beyond": binary.AppendUvarint(nil, MaxOrders+1),
		"short":        ans[:len(ans)-1],
		"long":         append(append([]byte(nil), ans...), 0),
		"non-minimal":  append([]byte{0x82, 0x00}, mine.Bytes()...),
	} {
		if _, err := DecodeFetch(b, me.ID()); err == nil {
			t.Errorf("%s: DecodeFetch accepted it", name)
		}
	}
}

func TestSetBounded(t *testing.T) {
	admin, _ := identity.Generate(nil)
	s := NewSet(2)
	now := time.Now()
	var last *wipeorder.Order
	for i := range 3 {
		d, _ := identity.Generate(nil)
		o, err := wipeorder.Issue(admin, d.ID(), now, time.Duration(i+1)*time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Add(o) || s.Add(o) {
			t.Fatal("Add: a new order not added, or a known one added twice")
		}
		last = o
	}
	all := s.All(now)
	if len(all) != 2 || len(s.For(last.Target)) != 1 {
		t.Fatalf("the set holds %d orders; want 2, the newest among them", len(all))
	}
	if got := s.All(now.Add(90 * time.Minute)); len(got) != 2 {
		t.Fatalf("after 90 minutes: %d orders; want the 2 that run 2 h and 3 h", len(got))
	}
}

func FuzzDecodeFetch(f *testing.F) {
	admin, _ := identity.Generate(nil)
	me, _ := identity.Generate(nil)
	o, _ := wipeorder.Issue(admin, me.ID(), time.Now(), time.Hour, nil)
	f.Add(append(binary.AppendUvarint(nil, 1), o.Bytes()...))
	f.Add([]byte{0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeFetch(b, me.ID())
		if err != nil {
			return
		}
		if len(got) > MaxOrders {
			t.Fatalf("%d orders decoded; the limit is %d", len(got), MaxOrders)
		}
		for _, o := range got {
			if o.Target != me.ID() {
				t.Fatal("an order naming another device was kept")
			}
		}
	})
}
