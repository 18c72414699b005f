package recon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// recon builds a RECON frame: flags, then body.
func reconFrame(flags byte, body ...byte) []byte {
	return append([]byte{version, typeRecon, flags}, body...)
}

func giveFrame(body ...byte) []byte { return append([]byte{version, typeGive}, body...) }

// freshResponder is a responder over a few items, before the peer's first frame.
func freshResponder(testing.TB) *Session {
	return NewResponder(newTestSource(64, itemsOf(hlcStep, keys(0, 40)...)), 0)
}

// startedInitiator is an initiator over n items that has sent its first frame: with n > listMax
// it has 16 fingerprint ranges open, else one id list.
func startedInitiator(t testing.TB, n int) *Session {
	s := NewInitiatorConfig(newTestSource(64, itemsOf(hlcStep, keys(0, n)...)), Config{Rand: newRand(3)})
	if _, err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

// first is a valid first frame for a responder: salt, then the whole space as an empty id list.
func first() []byte {
	return reconFrame(0, append(make([]byte, saltLen), ansSplit, modeList, 0)...)
}

// checkSticky checks that after an error every call returns it.
func checkSticky(t *testing.T, s *Session, err error) {
	t.Helper()
	for _, f := range [][]byte{first(), giveFrame(0), nil} {
		if _, _, _, err2 := s.Handle(f); err2 != err {
			t.Fatalf("after %v, Handle returned %v", err, err2)
		}
	}
}

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestGarbage(t *testing.T) {
	fp := make([]byte, fpLen)
	salt := make([]byte, saltLen)
	tests := []struct {
		name  string
		to    func(testing.TB) *Session
		frame []byte
		want  error
	}{
		{"empty", freshResponder, nil, ErrMalformed},
		{"one byte", freshResponder, []byte{version}, ErrMalformed},
		{"version", freshResponder, []byte{2, typeRecon, 0}, ErrVersion},
		{"unknown type", freshResponder, []byte{version, 9, 0}, ErrMalformed},
		{"no flags", freshResponder, []byte{version, typeRecon}, ErrMalformed},
		{"reserved flags", freshResponder, reconFrame(0x80, first()[3:]...), ErrMalformed},
		{"owe and fin", freshResponder, reconFrame(flagOwe|flagFin, first()[3:]...), ErrProtocol},
		{"short salt", freshResponder, reconFrame(0, 1, 2, 3), ErrMalformed},
		{"no answer", freshResponder, reconFrame(0, make([]byte, saltLen)...), ErrProtocol},
		{"two answers", freshResponder, append(first(), ansDone), ErrProtocol},
		{"done run too long", freshResponder, reconFrame(0, append(make([]byte, saltLen), 1<<2|ansDone)...), ErrProtocol},
		{"need for a range", freshResponder, reconFrame(0, append(make([]byte, saltLen), ansNeed, 1)...), ErrProtocol},
		{"non-minimal uvarint", freshResponder, reconFrame(0, append(make([]byte, saltLen), 0x81, 0x00)...), ErrMalformed},
		{"list too long", freshResponder, reconFrame(0, append(make([]byte, saltLen), ansSplit, modeList, listMax+1)...), ErrMalformed},
		{"list truncated", freshResponder, reconFrame(0, append(make([]byte, saltLen), ansSplit, modeList, 2, 1, 2, 3)...), ErrMalformed},
		{"split too wide", freshResponder, reconFrame(0, append(make([]byte, saltLen), maxSplit<<2|ansSplit)...), ErrMalformed},
		{"bad piece mode", freshResponder, reconFrame(0, append(make([]byte, saltLen), ansSplit, 7)...), ErrMalformed},
		{"split bound not above lower bound", freshResponder, reconFrame(0, cat(salt, []byte{1<<2 | ansSplit, 0<<2 | modeFP}, fp, []byte{modeFP}, fp)...), ErrProtocol},
		{"non-canonical time", freshResponder, reconFrame(0, cat(salt, []byte{1<<2 | ansSplit}, uv(2<<6<<2|modeFP), fp, []byte{modeFP}, fp)...), ErrMalformed},
		{"prefix ends in zero", freshResponder, reconFrame(0, cat(salt, []byte{1<<2 | ansSplit}, uv(1<<6<<2|2|modeFP), []byte{2, 5, 0}, fp, []byte{modeFP}, fp)...), ErrMalformed},
		{"prefix too long", freshResponder, reconFrame(0, cat(salt, []byte{1<<2 | ansSplit}, uv(1<<6<<2|2), []byte{33})...), ErrMalformed},
		{"time overflows", freshResponder, reconFrame(0, cat(salt, []byte{1<<2 | ansSplit}, uv(timeEscape<<2), uv(1<<63|1), []byte{1<<2 | ansSplit}, uv(timeEscape<<2), uv(1<<63|1))...), ErrMalformed},
		{"needless escape", freshResponder, reconFrame(0, cat(salt, []byte{1<<2 | ansSplit}, uv(timeEscape<<2), uv(3))...), ErrMalformed},
		{"give first", freshResponder, giveFrame(0), ErrUnexpectedFrame},
		{"too large", freshResponder, make([]byte, MaxFrameSize+1), ErrFrameTooLarge},
		{"initiator: nothing answered", func(t testing.TB) *Session { return startedInitiator(t, 100) }, reconFrame(0), ErrProtocol},
		{"initiator: need for a range", func(t testing.TB) *Session { return startedInitiator(t, 100) }, reconFrame(0, ansNeed, 1), ErrProtocol},
		{"initiator: split of a list", func(t testing.TB) *Session { return startedInitiator(t, 3) }, reconFrame(0, ansSplit, modeList, 0), ErrProtocol},
		{"initiator: empty need", func(t testing.TB) *Session { return startedInitiator(t, 3) }, reconFrame(0, ansNeed, 0), ErrMalformed},
		{"initiator: need padding", func(t testing.TB) *Session { return startedInitiator(t, 3) }, reconFrame(0, ansNeed, 0x09), ErrMalformed},
		{"initiator: need truncated", func(t testing.TB) *Session { return startedInitiator(t, 3) }, reconFrame(0, ansNeed), ErrMalformed},
		{"initiator: empty give", func(t testing.TB) *Session { return startedInitiator(t, 3) }, giveFrame(), ErrMalformed},
		{"initiator: empty piece continues", func(t testing.TB) *Session { return startedInitiator(t, 3) }, giveFrame(1), ErrMalformed},
		{"initiator: piece truncated", func(t testing.TB) *Session { return startedInitiator(t, 3) }, giveFrame(10<<1, 1, 2), ErrMalformed},
		{"initiator: envelope too large", func(t testing.TB) *Session { return startedInitiator(t, 3) },
			giveFrame(binary.AppendUvarint(nil, (MaxEnvelopeSize+1)<<1)...), ErrEnvelopeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.to(t)
			out, recv, done, err := s.Handle(tt.frame)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Handle = %v; want %v", err, tt.want)
			}
			if out != nil || recv != nil || done {
				t.Fatalf("Handle returned %d frames, %d envelopes, done %v with an error", len(out), len(recv), done)
			}
			checkSticky(t, s, err)
		})
	}
}

// TestRandomGarbage feeds random bytes, and random bytes behind a valid header, to sessions in
// several states: Handle must fail and never panic.
func TestRandomGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	makers := []func(testing.TB) *Session{
		freshResponder,
		func(t testing.TB) *Session { return startedInitiator(t, 100) },
		func(t testing.TB) *Session { return startedInitiator(t, 3) },
	}
	for i := range 3000 {
		s := makers[i%len(makers)](t)
		f := make([]byte, r.IntN(80))
		for k := range f {
			f[k] = byte(r.Uint32())
		}
		switch i % 3 {
		case 1:
			f = append([]byte{version, typeRecon, 0}, f...)
		case 2:
			f = append([]byte{version, typeGive}, f...)
		}
		s.Handle(f) // must not panic; the outcome depends on the bytes
	}
}

// transcript returns a real exchange's frames, replayable with replay.
func transcript(t *testing.T) (a, b *testSource, frames []sentFrame) {
	r := rand.New(rand.NewPCG(5, 6))
	a = newTestSource(5000, itemsOf(hlcStep, scatter(r, keys(0, 400), 6)...))
	b = newTestSource(5000, itemsOf(hlcStep, scatter(r, keys(0, 400), 6)...))
	res := run(t, NewInitiatorConfig(a, Config{MaxFrame: MinFrameSize, Rand: newRand(9)}), NewResponder(b, MinFrameSize), true)
	return a, b, res.frames
}

// replay runs the transcript's first k frames through fresh sessions and returns them.
func replay(t *testing.T, a, b *testSource, frames []sentFrame, k int) (ini, res *Session) {
	ini = NewInitiatorConfig(a, Config{MaxFrame: MinFrameSize, Rand: newRand(9)})
	res = NewResponder(b, MinFrameSize)
	if _, err := ini.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames[:k] {
		to := ini
		if f.toResponder {
			to = res
		}
		if _, _, _, err := to.Handle(f.b); err != nil {
			t.Fatalf("replay: %v", err)
		}
	}
	return ini, res
}

// TestCorruptedTranscript truncates and flips bits in every frame of a real exchange: a
// truncated RECON frame must fail, and nothing may panic.
func TestCorruptedTranscript(t *testing.T) {
	a, b, frames := transcript(t)
	if len(frames) < 6 {
		t.Fatalf("transcript of %d frames; want a longer one", len(frames))
	}
	r := rand.New(rand.NewPCG(1, 1))
	for k, f := range frames {
		cuts := []int{0, 1, 2, 3, len(f.b) / 2, len(f.b) - 1}
		for range 6 {
			cuts = append(cuts, r.IntN(len(f.b)))
		}
		for _, cut := range cuts {
			if cut >= len(f.b) {
				continue
			}
			ini, res := replay(t, a, b, frames, k)
			to := ini
			if f.toResponder {
				to = res
			}
			_, _, _, err := to.Handle(f.b[:cut])
			if f.b[1] == typeRecon && err == nil {
				t.Fatalf("frame %d (RECON) cut to %d of %d bytes was accepted", k, cut, len(f.b))
			}
		}
		for range 8 {
			ini, res := replay(t, a, b, frames, k)
			to := ini
			if f.toResponder {
				to = res
			}
			g := bytes.Clone(f.b)
			g[r.IntN(len(g))] ^= 1 << r.IntN(8)
			to.Handle(g) // a flipped fingerprint can be valid: only no panic is required
		}
	}
}

func TestWrongState(t *testing.T) {
	src := newTestSource(64, itemsOf(1, keys(0, 5)...))
	t.Run("start twice", func(t *testing.T) {
		s := NewInitiator(src, 0)
		if _, err := s.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Start(); !errors.Is(err, ErrState) {
			t.Fatalf("second Start = %v; want ErrState", err)
		}
	})
	t.Run("handle before start", func(t *testing.T) {
		if _, _, _, err := NewInitiator(src, 0).Handle(first()); !errors.Is(err, ErrState) {
			t.Fatalf("Handle before Start = %v; want ErrState", err)
		}
	})
	t.Run("responder start", func(t *testing.T) {
		if f, err := NewResponder(src, 0).Start(); f != nil || err != nil {
			t.Fatalf("responder Start = %x, %v; want nil, nil", f, err)
		}
	})
	t.Run("nil source", func(t *testing.T) {
		if _, err := NewInitiator(nil, 0).Start(); !errors.Is(err, ErrState) {
			t.Fatalf("Start with a nil Source = %v; want ErrState", err)
		}
		if _, _, _, err := NewResponder(nil, 0).Handle(first()); !errors.Is(err, ErrState) {
			t.Fatalf("Handle with a nil Source = %v; want ErrState", err)
		}
	})
	t.Run("after done", func(t *testing.T) {
		ini, res := NewInitiator(src, 0), NewResponder(src, 0)
		run(t, ini, res, false)
		for _, s := range []*Session{ini, res} {
			if _, _, _, err := s.Handle(reconFrame(0)); !errors.Is(err, ErrUnexpectedFrame) {
				t.Fatalf("Handle after done = %v; want ErrUnexpectedFrame", err)
			}
		}
	})
	t.Run("bad salt source", func(t *testing.T) {
		s := NewInitiatorConfig(src, Config{Rand: bytes.NewReader(nil)})
		if _, err := s.Start(); err == nil {
			t.Fatal("Start with an empty Rand succeeded")
		}
	})
}

func TestSourceErrors(t *testing.T) {
	boom := errors.New("boom")
	t.Run("items", func(t *testing.T) {
		src := newTestSource(64, nil)
		src.itemsErr = boom
		if _, err := NewInitiator(src, 0).Start(); !errors.Is(err, boom) {
			t.Fatalf("Start = %v; want %v", err, boom)
		}
		if _, _, _, err := NewResponder(src, 0).Handle(first()); !errors.Is(err, boom) {
			t.Fatalf("Handle = %v; want %v", err, boom)
		}
	})
	t.Run("envelope", func(t *testing.T) {
		src := newTestSource(64, itemsOf(1, keys(0, 5)...))
		src.envErr = boom
		// The initiator lists nothing; the responder owes it all five envelopes.
		if _, _, _, err := NewResponder(src, 0).Handle(first()); !errors.Is(err, boom) {
			t.Fatalf("Handle = %v; want %v", err, boom)
		}
	})
	t.Run("envelope too large", func(t *testing.T) {
		src := newTestSource(MaxEnvelopeSize+1, itemsOf(1, keys(0, 1)...))
		if _, _, _, err := NewResponder(src, 0).Handle(first()); !errors.Is(err, ErrEnvelopeTooLarge) {
			t.Fatalf("Handle = %v; want ErrEnvelopeTooLarge", err)
		}
	})
}

func TestLimits(t *testing.T) {
	t.Run("items in source", func(t *testing.T) {
		s := NewInitiator(newTestSource(64, itemsOf(1, keys(0, 11)...)), 0)
		s.maxItems = 10
		if _, err := s.Start(); !errors.Is(err, ErrTooManyItems) {
			t.Fatalf("Start = %v; want ErrTooManyItems", err)
		}
	})
	t.Run("envelopes received", func(t *testing.T) {
		ini := NewInitiator(newTestSource(64, nil), 0)
		ini.maxItems = 10
		f, err := ini.Start()
		if err != nil {
			t.Fatal(err)
		}
		out, _, _, err := NewResponder(newTestSource(64, itemsOf(1, keys(0, 11)...)), 0).Handle(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range out {
			if _, _, _, err = ini.Handle(f); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrTooManyItems) {
			t.Fatalf("Handle = %v; want ErrTooManyItems", err)
		}
	})
	t.Run("rounds", func(t *testing.T) {
		r := rand.New(rand.NewPCG(2, 2))
		a := newTestSource(64, itemsOf(hlcStep, scatter(r, keys(0, 5000), 100)...))
		b := newTestSource(64, itemsOf(hlcStep, scatter(r, keys(0, 5000), 100)...))
		ini, res := NewInitiator(a, 0), NewResponder(b, 0)
		ini.maxRounds = 1
		f, _ := ini.Start()
		queue, to, from := [][]byte{f}, res, ini
		var err error
		for len(queue) > 0 && err == nil {
			var out [][]byte
			out, _, _, err = to.Handle(queue[0])
			queue = queue[1:]
			if len(out) > 0 {
				queue, to, from = out, from, to
			}
		}
		if !errors.Is(err, ErrTooManyRounds) {
			t.Fatalf("exchange ended with %v; want ErrTooManyRounds", err)
		}
	})
}

// TestEndRules checks the rules around OWE and FIN: a flight that claimed to owe envelopes must
// carry one, and a FIN must not leave anything open or owed.
func TestEndRules(t *testing.T) {
	fp := make([]byte, fpLen)
	tests := []struct {
		name   string
		n      int // initiator's items
		frames [][]byte
		want   error
	}{
		{"owed and carried none", 0, [][]byte{reconFrame(flagOwe, ansDone), reconFrame(0)}, ErrProtocol},
		{"fin asking for envelopes", 3, [][]byte{reconFrame(flagFin, ansNeed, 1)}, ErrProtocol},
		{"fin with open ranges", 3, [][]byte{reconFrame(flagFin, append([]byte{ansGroup, modeFP}, fp...)...)}, ErrProtocol},
		{"fin while owed", 3, [][]byte{reconFrame(0, ansNeed, 7), reconFrame(flagFin)}, ErrProtocol},
		{"recon inside an envelope", 0, [][]byte{giveFrame(4<<1|1, 1, 2, 3, 4), reconFrame(0, ansDone)}, ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startedInitiator(t, tt.n)
			s.flightSize = 1 // one envelope per flight
			var err error
			for _, f := range tt.frames {
				if _, _, _, err = s.Handle(f); err != nil {
					break
				}
			}
			t.Logf("%v", err)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Handle = %v; want %v", err, tt.want)
			}
		})
	}
}
