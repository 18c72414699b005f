package epochkey

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

func TestSealToEachOpenAny(t *testing.T) {
	f := newTeamFixture(t, 5)
	prologue := []byte("fieldmesh/test/anonymous")
	payload := bytes.Repeat([]byte{0x5a}, 32)
	msgs, err := SealToEach(f.sender, f.publics(), prologue, payload, detRand(5))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(f.members) {
		t.Fatalf("SealToEach: got %d messages; want %d", len(msgs), len(f.members))
	}
	for i, m := range f.members {
		if got, want := len(msgs[i]), len(payload)+Overhead; got != want {
			t.Errorf("message %d: %d bytes; want %d", i, got, want)
		}
		// The same bytes as SealTo with the same randomness.
		one, err := SealTo(f.sender, m.NoisePublic(), prologue, payload, detRand(5))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && !bytes.Equal(one, msgs[0]) {
			t.Errorf("message 0 differs from SealTo's with the same randomness")
		}
		idx, sender, pl, err := OpenAny(m, prologue, msgs)
		if err != nil || idx != i || sender != f.sender.NoisePublic() || !bytes.Equal(pl, payload) {
			t.Errorf("member %d: OpenAny got %d, %v, %d bytes, %v; want %d, the sender, the payload, nil",
				i, idx, sender.Short(), len(pl), err, i)
		}
	}
	outsider := device(t, 99)
	if idx, _, pl, err := OpenAny(outsider, prologue, msgs); !errors.Is(err, ErrNotRecipient) || idx != -1 || pl != nil {
		t.Errorf("outsider: got %d, %v, %v; want -1, nil, ErrNotRecipient", idx, pl, err)
	}
	if _, _, _, err := OpenAny(f.members[1], []byte("another prologue"), msgs); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("other prologue: got %v; want ErrNotRecipient", err)
	}
	// Garbage, truncated and empty messages are skipped, not fatal.
	mixed := [][]byte{nil, msgs[2][:Overhead-1], bytes.Repeat([]byte{1}, len(msgs[2])), msgs[2]}
	if idx, _, _, err := OpenAny(f.members[2], prologue, mixed); err != nil || idx != 3 {
		t.Errorf("mixed: got %d, %v; want 3, nil", idx, err)
	}
	if _, err := SealToEach(f.sender, []identity.NoisePublic{{}}, prologue, payload, nil); !errors.Is(err, ErrSeal) {
		t.Errorf("low-order recipient: got %v; want ErrSeal", err)
	}
	if _, err := SealToEach(f.sender, f.publics(), prologue, make([]byte, MaxPayload+1), nil); !errors.Is(err, ErrPayloadSize) {
		t.Errorf("oversized payload: got %v; want ErrPayloadSize", err)
	}
}
