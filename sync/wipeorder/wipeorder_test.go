package wipeorder

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

func device(t testing.TB) *identity.Device {
	t.Helper()
	d, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func adminsOf(ds ...*identity.Device) func(identity.DeviceID) bool {
	return func(id identity.DeviceID) bool {
		for _, d := range ds {
			if d.ID() == id {
				return true
			}
		}
		return false
	}
}

func TestIssueParseCheck(t *testing.T) {
	admin, lost := device(t), device(t)
	o, err := Issue(admin, lost.ID(), t0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(o.Bytes()); got != Size {
		t.Fatalf("encoded size %d; want %d", got, Size)
	}
	p, err := Parse(o.Bytes())
	if err != nil {
		t.Fatalf("Parse(Issue(...)): %v", err)
	}
	if p.Target != lost.ID() || p.Signer != admin.ID() || p.Nonce != o.Nonce || !p.Expires.Equal(t0.Add(DefaultLifetime)) {
		t.Fatalf("parsed %+v; want target %s signer %s", p, lost.ID().Short(), admin.ID().Short())
	}
	if err := p.Check(lost.ID(), adminsOf(admin), t0.Add(time.Hour)); err != nil {
		t.Fatalf("Check by its target: %v", err)
	}
}

// Attacks on the order, each of which must leave the target (or another device) alone.
func TestCheckRefuses(t *testing.T) {
	admin, member, lost, other := device(t), device(t), device(t), device(t)
	good, err := Issue(admin, lost.ID(), t0, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	byMember, err := Issue(member, lost.ID(), t0, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		order *Order
		self  identity.DeviceID
		now   time.Time
		want  error
	}{
		{"replayed against another device", good, other.ID(), t0, ErrNotForMe},
		{"signed by a member who is not an admin", byMember, lost.ID(), t0, ErrNotAdmin},
		{"expired", good, lost.ID(), t0.Add(2 * time.Hour), ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.order.Check(tc.self, adminsOf(admin), tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check: %v; want %v", err, tc.want)
			}
		})
	}
}

func TestParseRefusesForgery(t *testing.T) {
	admin, lost, other := device(t), device(t), device(t)
	o, err := Issue(admin, lost.ID(), t0, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	retarget := o.Bytes()
	oid := other.ID()
	copy(retarget[1:33], oid[:]) // point an admin's order at another device
	extend := o.Bytes()
	extend[96]++ // stretch its window
	resigned := o.Bytes()
	copy(resigned[33:65], oid[:]) // claim another signer without its key
	flipped := o.Bytes()
	flipped[Size-1] ^= 1
	for name, b := range map[string][]byte{"retargeted": retarget, "extended": extend, "signer swapped": resigned, "signature flipped": flipped} {
		if _, err := Parse(b); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: Parse: %v; want ErrBadSignature", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"short":     o.Bytes()[:Size-1],
		"long":      append(o.Bytes(), 0),
		"version 2": append([]byte{2}, o.Bytes()[1:]...),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse: %v; want ErrMalformed", name, err)
		}
	}
}

func TestIssueRefuses(t *testing.T) {
	admin := device(t)
	if _, err := Issue(admin, admin.ID(), t0, 0, nil); err == nil {
		t.Error("an order naming its own signer was issued")
	}
	if _, err := Issue(admin, device(t).ID(), t0, MaxLifetime+time.Second, nil); err == nil {
		t.Error("an order longer than MaxLifetime was issued")
	}
}

func TestNoncesDiffer(t *testing.T) {
	admin, lost := device(t), device(t)
	a, _ := Issue(admin, lost.ID(), t0, 0, nil)
	b, _ := Issue(admin, lost.ID(), t0, 0, nil)
	if a.Key() == b.Key() || bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two orders for the same device share a key")
	}
}

func FuzzParse(f *testing.F) {
	admin, lost := device(f), device(f)
	o, err := Issue(admin, lost.ID(), t0, 0, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(o.Bytes())
	f.Add([]byte{})
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := Parse(b)
		if err != nil {
			return
		}
		if !bytes.Equal(o.Bytes(), b) {
			t.Fatal("a parsed order does not re-encode to its input")
		}
		if !o.Expires.After(o.Issued) {
			t.Fatal("a parsed order ends before it starts")
		}
	})
}
