package catchup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// Frame builders for hand-made (often bad) frames.

func haveFrame(more bool, ks ...int) []byte { return idFrame(typeHave, more, ids(ks...)) }
func wantFrame(more bool, ks ...int) []byte { return idFrame(typeWant, more, ids(ks...)) }

// giveFrame is a GIVE of test envelopes ks (64 bytes each), in the order given.
func giveFrame(more bool, ks ...int) []byte {
	b := []byte{version, byte(typeGive), flagsFor(more)}
	b = binary.AppendUvarint(b, uint64(len(ks)))
	for _, k := range ks {
		id, env := keyID(k), testEnvelope(k, 64)
		b = append(b, id[:]...)
		b = binary.AppendUvarint(b, uint64(len(env)))
		b = append(b, env...)
	}
	return b
}

// ids returns the ids of keys ks, in the order given.
func ids(ks ...int) [][32]byte {
	out := make([][32]byte, len(ks))
	for i, k := range ks {
		out[i] = keyID(k)
	}
	return out
}

// sorted returns keys ks ordered by their ids (the wire order).
func sorted(ks ...int) []int {
	out := slices.Clone(ks)
	slices.SortFunc(out, func(a, b int) int { return compareID(keyID(a), keyID(b)) })
	return out
}

// Sessions in each state. The initiator holds envelopes 1, 2, 3; the responder 3, 4, 5.

func freshResponder(t *testing.T) *Session {
	return NewResponder(sourceOf(64, 3, 4, 5), MinFrameSize)
}

// responderAwaitingGive has been told the initiator holds 1, 2, 3 and wants 1 and 2.
func responderAwaitingGive(t *testing.T) *Session {
	s := freshResponder(t)
	mustHandle(t, s, haveFrame(false, sorted(1, 2, 3)...))
	return s
}

func startedInitiator(t *testing.T, src *memSource, maxFrame int) *Session {
	s := NewInitiator(src, maxFrame)
	if _, err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

// initiatorAwaitingNext holds 300 ids: three HAVE frames at 4 KiB.
func initiatorAwaitingNext(t *testing.T) *Session {
	s := startedInitiator(t, sourceOf(64, keys(0, 300)...), MinFrameSize)
	if s.state != stateAwaitNext {
		t.Fatalf("state %v; want %v", s.state, stateAwaitNext)
	}
	return s
}

func initiatorAwaitingGive(t *testing.T) *Session {
	return startedInitiator(t, sourceOf(64, 1, 2, 3), MinFrameSize)
}

func initiatorAwaitingWant(t *testing.T) *Session {
	s := initiatorAwaitingGive(t)
	mustHandle(t, s, giveFrame(false))
	return s
}

func doneInitiator(t *testing.T) *Session {
	s := initiatorAwaitingWant(t)
	mustHandle(t, s, wantFrame(false))
	return s
}

func doneResponder(t *testing.T) *Session {
	s := responderAwaitingGive(t)
	mustHandle(t, s, giveFrame(false, sorted(1, 2)...))
	return s
}

func mustHandle(t *testing.T, s *Session, f []byte) [][]byte {
	t.Helper()
	out, _, _, err := s.Handle(f)
	if err != nil {
		t.Fatalf("Handle(%x...): %v", f[:min(len(f), 8)], err)
	}
	return out
}

func TestHandleErrors(t *testing.T) {
	one := sorted(1, 2, 3)
	tests := []struct {
		name    string
		session func(*testing.T) *Session
		frame   []byte
		want    error
	}{
		// Frames that do not decode, whatever the state.
		{"nil", freshResponder, nil, ErrMalformed},
		{"one byte", freshResponder, []byte{1}, ErrMalformed},
		{"version 0", freshResponder, []byte{0, 1, 0, 0}, ErrVersion},
		{"version 2", freshResponder, []byte{2, 1, 0, 0}, ErrVersion},
		{"unknown type 0", freshResponder, []byte{1, 0, 0, 0}, ErrMalformed},
		{"unknown type 9", freshResponder, []byte{1, 9, 0, 0}, ErrMalformed},
		{"HAVE without flags", freshResponder, []byte{1, 1}, ErrMalformed},
		{"HAVE without count", freshResponder, []byte{1, 1, 0}, ErrMalformed},
		{"HAVE reserved flag", freshResponder, []byte{1, 1, 2, 0}, ErrMalformed},
		{"HAVE non-minimal count", freshResponder, []byte{1, 1, 0, 0x80, 0}, ErrMalformed},
		{"HAVE overlong count", freshResponder, []byte{1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1}, ErrMalformed},
		{"HAVE count 2^62 with no ids", freshResponder, binary.AppendUvarint([]byte{1, 1, 0}, 1<<62), ErrMalformed},
		{"HAVE count 2 with 1 id", freshResponder, cat([]byte{1, 1, 0, 2}, ids(1)[0][:]), ErrMalformed},
		{"HAVE partial id", freshResponder, cat([]byte{1, 1, 0, 1}, ids(1)[0][:31]), ErrMalformed},
		{"HAVE trailing byte", freshResponder, cat(haveFrame(false, 1), []byte{0}), ErrMalformed},
		{"HAVE empty with more", freshResponder, haveFrame(true), ErrMalformed},
		{"HAVE descending", freshResponder, haveFrame(false, one[2], one[0]), ErrMalformed},
		{"HAVE duplicate", freshResponder, haveFrame(false, 1, 1), ErrMalformed},
		{"NEXT with payload", initiatorAwaitingNext, []byte{1, 2, 0}, ErrMalformed},
		{"GIVE count 2^40", initiatorAwaitingGive, binary.AppendUvarint([]byte{1, 3, 0}, 1<<40), ErrMalformed},
		{"GIVE length past end", initiatorAwaitingGive, cat([]byte{1, 3, 0, 1}, ids(4)[0][:], []byte{100, 1, 2}), ErrMalformed},
		{"GIVE non-minimal length", initiatorAwaitingGive, cat([]byte{1, 3, 0, 1}, ids(4)[0][:], []byte{0x81, 0}), ErrMalformed},
		{"GIVE trailing byte", initiatorAwaitingGive, cat(giveFrame(false, 4), []byte{0}), ErrMalformed},
		{"GIVE empty with more", initiatorAwaitingGive, giveFrame(true), ErrMalformed},
		{"WANT count short", initiatorAwaitingWant, []byte{1, 4, 0, 1}, ErrMalformed},
		{"oversize frame", freshResponder, make([]byte, MaxFrameSize+1), ErrFrameTooLarge},

		// Well-formed frames at the wrong time.
		{"GIVE to fresh responder", freshResponder, giveFrame(false), ErrUnexpectedFrame},
		{"WANT to fresh responder", freshResponder, wantFrame(false), ErrUnexpectedFrame},
		{"NEXT to fresh responder", freshResponder, nextFrame(), ErrUnexpectedFrame},
		{"HAVE to responder awaiting GIVE", responderAwaitingGive, haveFrame(false), ErrUnexpectedFrame},
		{"WANT to responder awaiting GIVE", responderAwaitingGive, wantFrame(false), ErrUnexpectedFrame},
		{"HAVE to initiator", initiatorAwaitingGive, haveFrame(false), ErrUnexpectedFrame},
		{"WANT before GIVE", initiatorAwaitingGive, wantFrame(false), ErrUnexpectedFrame},
		{"NEXT after last HAVE", initiatorAwaitingGive, nextFrame(), ErrUnexpectedFrame},
		{"GIVE while awaiting NEXT", initiatorAwaitingNext, giveFrame(false), ErrUnexpectedFrame},
		{"GIVE after GIVE ended", initiatorAwaitingWant, giveFrame(false), ErrUnexpectedFrame},
		{"WANT to done initiator", doneInitiator, wantFrame(false), ErrUnexpectedFrame},
		{"GIVE to done responder", doneResponder, giveFrame(false), ErrUnexpectedFrame},
		{"HAVE to done responder", doneResponder, haveFrame(false), ErrUnexpectedFrame},

		// Items the peer should not send.
		{"GIVE of an id the initiator announced", initiatorAwaitingGive, giveFrame(false, 2), ErrUnsolicited},
		{"GIVE descending", initiatorAwaitingGive, giveFrame(false, sorted(4, 5)[1], sorted(4, 5)[0]), ErrMalformed},
		{"GIVE duplicate", initiatorAwaitingGive, giveFrame(false, 4, 4), ErrMalformed},
		{"WANT of an id not announced", initiatorAwaitingWant, wantFrame(false, 4), ErrUnsolicited},
		{"WANT duplicate", initiatorAwaitingWant, wantFrame(false, 1, 1), ErrUnsolicited},
		{"WANT descending", initiatorAwaitingWant, wantFrame(false, one[1], one[0]), ErrUnsolicited},
		{"GIVE to responder of an id it has", responderAwaitingGive, giveFrame(false, 3), ErrUnsolicited},
		{"GIVE to responder of an id not asked for", responderAwaitingGive, giveFrame(false, 9), ErrUnsolicited},
		{"GIVE to responder twice", responderAwaitingGive, giveFrame(false, 1, 1), ErrUnsolicited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.session(t)
			out, recv, done, err := s.Handle(tt.frame)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Handle error = %v; want %v", err, tt.want)
			}
			if out != nil || recv != nil || done {
				t.Errorf("Handle returned out=%d received=%d done=%v with the error; want nothing", len(out), len(recv), done)
			}
			// The error is final.
			if _, _, _, err2 := s.Handle(haveFrame(false)); err2 != err {
				t.Errorf("next Handle error = %v; want the same error %v", err2, err)
			}
		})
	}
}

func TestTooManyItems(t *testing.T) {
	t.Run("HAVE", func(t *testing.T) {
		s := freshResponder(t)
		s.maxItems = 4
		ks := sorted(1, 2, 6, 7, 8)
		mustHandle(t, s, haveFrame(true, ks[:3]...))
		_, _, _, err := s.Handle(haveFrame(false, ks[3:]...))
		if !errors.Is(err, ErrTooManyItems) {
			t.Errorf("5th id: error = %v; want %v", err, ErrTooManyItems)
		}
	})
	t.Run("HAVE at the limit", func(t *testing.T) {
		s := freshResponder(t)
		s.maxItems = 4
		ks := sorted(1, 2, 6, 7)
		mustHandle(t, s, haveFrame(true, ks[:3]...))
		mustHandle(t, s, haveFrame(false, ks[3:]...))
	})
	t.Run("GIVE", func(t *testing.T) {
		s := initiatorAwaitingGive(t)
		s.maxItems = 2
		ks := sorted(4, 5, 6)
		mustHandle(t, s, giveFrame(true, ks[0]))
		_, _, _, err := s.Handle(giveFrame(false, ks[1:]...))
		if !errors.Is(err, ErrTooManyItems) {
			t.Errorf("3rd envelope: error = %v; want %v", err, ErrTooManyItems)
		}
	})
	t.Run("Start", func(t *testing.T) {
		s := NewInitiator(sourceOf(64, 1, 2, 3), 0)
		s.maxItems = 2
		if _, err := s.Start(); !errors.Is(err, ErrTooManyItems) {
			t.Errorf("Start error = %v; want %v", err, ErrTooManyItems)
		}
	})
}

func TestMisuse(t *testing.T) {
	s := NewInitiator(sourceOf(64, 1), 0)
	if _, _, _, err := s.Handle(giveFrame(false)); !errors.Is(err, ErrState) {
		t.Errorf("Handle before Start: error = %v; want %v", err, ErrState)
	}
	if _, err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := s.Start(); !errors.Is(err, ErrState) {
		t.Errorf("second Start: error = %v; want %v", err, ErrState)
	}
	if f, err := NewResponder(nil, 0).Start(); f != nil || err != nil {
		t.Errorf("responder Start = %x, %v; want nil, nil", f, err)
	}
	if _, err := NewInitiator(nil, 0).Start(); !errors.Is(err, ErrState) {
		t.Errorf("Start with a nil Source: error = %v; want %v", err, ErrState)
	}
	if _, _, _, err := NewResponder(nil, 0).Handle(haveFrame(false)); !errors.Is(err, ErrState) {
		t.Errorf("responder with a nil Source: error = %v; want %v", err, ErrState)
	}
}

func TestSourceErrors(t *testing.T) {
	boom := fmt.Errorf("disk on fire")
	t.Run("initiator Items", func(t *testing.T) {
		src := sourceOf(64, 1)
		src.itemsErr = boom
		if _, err := NewInitiator(src, 0).Start(); !errors.Is(err, boom) {
			t.Errorf("Start error = %v; want %v", err, boom)
		}
	})
	t.Run("responder Items", func(t *testing.T) {
		src := sourceOf(64, 1)
		src.itemsErr = boom
		if _, _, _, err := NewResponder(src, 0).Handle(haveFrame(false)); !errors.Is(err, boom) {
			t.Errorf("Handle error = %v; want %v", err, boom)
		}
	})
	t.Run("responder Envelope", func(t *testing.T) {
		src := sourceOf(64, 1)
		src.envErr = boom
		if _, _, _, err := NewResponder(src, 0).Handle(haveFrame(false)); !errors.Is(err, boom) {
			t.Errorf("Handle error = %v; want %v", err, boom)
		}
	})
	t.Run("initiator Envelope", func(t *testing.T) {
		src := sourceOf(64, 1)
		s := startedInitiator(t, src, 0)
		src.envErr = boom
		mustHandle(t, s, giveFrame(false))
		if _, _, _, err := s.Handle(wantFrame(false, 1)); !errors.Is(err, boom) {
			t.Errorf("Handle error = %v; want %v", err, boom)
		}
	})
}

func TestEnvelopeTooLarge(t *testing.T) {
	const size = MinFrameSize - EnvelopeOverhead + 1
	t.Run("responder", func(t *testing.T) {
		s := NewResponder(sourceOf(size, 1), MinFrameSize)
		if _, _, _, err := s.Handle(haveFrame(false)); !errors.Is(err, ErrEnvelopeTooLarge) {
			t.Errorf("Handle error = %v; want %v", err, ErrEnvelopeTooLarge)
		}
	})
	t.Run("initiator", func(t *testing.T) {
		s := startedInitiator(t, sourceOf(size, 1), MinFrameSize)
		mustHandle(t, s, giveFrame(false))
		if _, _, _, err := s.Handle(wantFrame(false, 1)); !errors.Is(err, ErrEnvelopeTooLarge) {
			t.Errorf("Handle error = %v; want %v", err, ErrEnvelopeTooLarge)
		}
	})
	t.Run("fits at a larger frame", func(t *testing.T) {
		syncPair(t, sourceOf(size, 1), sourceOf(size, 2), MinFrameSize+1)
	})
}

// TestTruncatedFrames replays a real exchange and cuts each frame at every length: the
// receiving side must fail, never panic or accept.
func TestTruncatedFrames(t *testing.T) {
	a, b := sourceOf(40, 1, 2, 3), sourceOf(40, 3, 4)
	r := run(t, NewInitiator(a, 0), NewResponder(b, 0))
	for i, m := range r.transcript {
		for cut := range len(m.frame) {
			ini, res := NewInitiator(a, 0), NewResponder(b, 0)
			if _, err := ini.Start(); err != nil {
				t.Fatal(err)
			}
			for _, p := range r.transcript[:i] {
				s := ini
				if p.toResponder {
					s = res
				}
				mustHandle(t, s, p.frame)
			}
			s := ini
			if m.toResponder {
				s = res
			}
			if _, _, _, err := s.Handle(m.frame[:cut]); err == nil {
				t.Errorf("frame %d (%v) cut to %d of %d bytes: accepted", i, frameType(m.frame[1]), cut, len(m.frame))
			}
		}
	}
}
