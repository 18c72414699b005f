package senderkey

import (
	"errors"
	"testing"
)

func TestWipe(t *testing.T) {
	key := epochKey(t, 1)
	dev := deviceID(7)
	s := NewSender(key, dev)
	r := NewReceiver(key, dev)
	var cts [][]byte
	for range 3 {
		_, ct, err := s.Seal(nz, nil, []byte("m"))
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, ct)
	}
	if _, err := r.Open(2, nz, nil, cts[2]); err != nil || r.Skipped() != 2 {
		t.Fatalf("Open 2: got %v, %d skipped; want nil, 2", err, r.Skipped())
	}
	s.Wipe()
	r.Wipe()
	if _, _, err := s.Seal(nz, nil, []byte("m")); !errors.Is(err, ErrExhausted) {
		t.Errorf("Seal after Wipe: got %v; want ErrExhausted", err)
	}
	if r.Skipped() != 0 {
		t.Errorf("Skipped after Wipe: got %d; want 0", r.Skipped())
	}
	for i, ct := range cts {
		if pt, err := r.Open(uint32(i), nz, nil, ct); err == nil {
			t.Errorf("Open %d after Wipe: got %q, nil; want an error", i, pt)
		}
	}
	if _, err := UnmarshalReceiver(mustMarshal(t, r)); err != nil {
		t.Errorf("a wiped receiver state still encodes and decodes: got %v", err)
	}
}

func mustMarshal(t *testing.T, r *ReceiverState) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
