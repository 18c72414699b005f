package crdt

import (
	"errors"
	"testing"
	"time"
)

func TestPolicyBody(t *testing.T) {
	for _, p := range []Policy{{}, {LockAfter: 2 * time.Minute, OfflineLockDays: 3}, {LockAfter: MinLockAfter}, {LockAfter: MaxLockAfter, OfflineLockDays: MaxOfflineLockDays}} {
		got, err := UnmarshalPolicy(p.Marshal())
		if err != nil || got != p {
			t.Errorf("round trip of %+v = %+v, %v", p, got, err)
		}
	}
	for _, p := range []Policy{{LockAfter: time.Second}, {LockAfter: MaxLockAfter + time.Second}, {LockAfter: 90*time.Second + time.Millisecond}, {OfflineLockDays: MaxOfflineLockDays + 1}} {
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v; want ErrInvalid", p, err)
		}
		if p.LockAfter%time.Second != 0 {
			continue // Marshal keeps whole seconds only
		}
		if _, err := UnmarshalPolicy(p.Marshal()); err == nil {
			t.Errorf("UnmarshalPolicy accepted %+v", p)
		}
	}
	for _, b := range [][]byte{nil, {1, 0, 0, 0, 120, 0}, {1, 0, 0, 0, 120, 0, 3, 0}, {2, 0, 0, 0, 120, 0, 3}, {1, 0xff, 0xff, 0xff, 0xff, 0, 0}} {
		if _, err := UnmarshalPolicy(b); err == nil {
			t.Errorf("UnmarshalPolicy(%x) accepted", b)
		}
	}
}

func FuzzUnmarshalPolicy(f *testing.F) {
	fuzzRoundTrip(f, UnmarshalPolicy, Policy{}, Policy{LockAfter: 2 * time.Minute, OfflineLockDays: 3})
}
