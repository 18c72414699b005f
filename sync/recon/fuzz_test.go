package recon

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
)

// The fuzz sessions: two overlapping sets, with runs of equal timestamps, the responder's
// envelopes larger than the 4 KiB frames, and a deterministic salt, so that a recorded exchange
// replays exactly. Sessions only read them, so the fuzz targets share them.
var fuzzSources = sync.OnceValues(func() (ini, res *testSource) {
	r := rand.New(rand.NewPCG(8, 8))
	items := func(drop int) []Item {
		its := itemsOf(hlcStep, scatter(r, keys(0, 300), drop)...)
		for i := range its {
			if i%7 < 3 {
				its[i].Time = its[i-i%7].Time
			}
		}
		return its
	}
	return newTestSource(64, items(6)), newTestSource(4500, items(3))
})

func fuzzInitiator(t testing.TB) *Session {
	src, _ := fuzzSources()
	s := NewInitiatorConfig(src, Config{MaxFrame: MinFrameSize, Rand: newRand(21)})
	if _, err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

func fuzzResponder() *Session {
	_, src := fuzzSources()
	return NewResponder(src, MinFrameSize)
}

// fuzzTranscript records a real exchange between the fuzz sessions and returns the frames each
// side received, each sequence encoded with WriteFrame (the fuzz input format).
func fuzzTranscript(t testing.TB) (toIni, toRes []byte) {
	a, b := fuzzSources()
	res := run(t, NewInitiatorConfig(a, Config{MaxFrame: MinFrameSize, Rand: newRand(21)}), NewResponder(b, MinFrameSize), true)
	var ini, rsp bytes.Buffer
	for _, f := range res.frames {
		w := &ini
		if f.toResponder {
			w = &rsp
		}
		WriteFrame(w, f.b)
	}
	return ini.Bytes(), rsp.Bytes()
}

// fuzzSession feeds the frames in data (written by WriteFrame; a tail that does not decode is
// ignored) to s, checking that Handle never panics, that its errors are final, that the frames
// it returns fit maxFrame and carry a known type, and that a finished session accepts nothing.
func fuzzSession(t *testing.T, s *Session, data []byte) {
	r := bytes.NewReader(data)
	for {
		f, err := ReadFrame(r, MaxFrameSize)
		if err != nil {
			return
		}
		out, _, done, err := s.Handle(f)
		if err != nil {
			if _, _, _, err2 := s.Handle(f); err2 != err {
				t.Fatalf("error %v not final: then %v", err, err2)
			}
			return
		}
		for _, o := range out {
			if len(o) > s.maxFrame || len(o) < 2 || o[0] != version || (o[1] != typeRecon && o[1] != typeGive) {
				t.Fatalf("bad output frame of %d bytes: %x", len(o), o[:min(len(o), 8)])
			}
		}
		if done {
			if _, _, _, err := s.Handle(f); !errors.Is(err, ErrUnexpectedFrame) {
				t.Fatalf("Handle after done = %v; want ErrUnexpectedFrame", err)
			}
			return
		}
	}
}

func fuzzSeeds(f *testing.F, transcript []byte) {
	f.Add(transcript)
	// Prefixes of the exchange, and single frames of it.
	r := bytes.NewReader(transcript)
	var prefix bytes.Buffer
	for {
		fr, err := ReadFrame(r, MaxFrameSize)
		if err != nil {
			break
		}
		WriteFrame(&prefix, fr)
		f.Add(bytes.Clone(prefix.Bytes()))
	}
	f.Add([]byte{})
	f.Add([]byte{3, version, typeRecon, 0})
	f.Add([]byte{4, version, typeGive, 2, 7})
}

// FuzzResponder feeds arbitrary frames to a responder, starting from its first frame.
func FuzzResponder(f *testing.F) {
	_, toRes := fuzzTranscript(f)
	fuzzSeeds(f, toRes)
	first := reconFrame(0, append(make([]byte, saltLen), ansSplit, modeList, 0)...)
	var b bytes.Buffer
	WriteFrame(&b, first)
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzSession(t, fuzzResponder(), data)
	})
}

// FuzzInitiator feeds arbitrary frames to an initiator that has sent its first frame.
func FuzzInitiator(f *testing.F) {
	toIni, _ := fuzzTranscript(f)
	fuzzSeeds(f, toIni)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzSession(t, fuzzInitiator(t), data)
	})
}

// TestFuzzSeedsReplay checks that the recorded exchanges the fuzz targets start from replay to
// the end, so the fuzzers start deep in the protocol rather than at its first frame.
func TestFuzzSeedsReplay(t *testing.T) {
	toIni, toRes := fuzzTranscript(t)
	for _, c := range []struct {
		s    *Session
		data []byte
	}{{fuzzInitiator(t), toIni}, {fuzzResponder(), toRes}} {
		r := bytes.NewReader(c.data)
		done := false
		for !done {
			f, err := ReadFrame(r, MaxFrameSize)
			if err != nil {
				t.Fatalf("transcript ended before the session was done: %v", err)
			}
			if _, _, done, err = c.s.Handle(f); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// FuzzHello checks that a sync stream's hello and answer decode without panicking, and that what
// decodes marshals back to the same bytes.
func FuzzHello(f *testing.F) {
	f.Add(Hello{Mode: ModeMembership}.Marshal())
	f.Add([]byte{})
	f.Add(make([]byte, HelloSize+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHello(b)
		if err == nil && string(h.Marshal()) != string(b) {
			t.Fatalf("hello %x decodes to %+v, which marshals to %x", b, h, h.Marshal())
		}
		if a, err := ParseAnswer(b); err == nil && (len(b) != 1 || byte(a) != b[0]) {
			t.Fatalf("answer %x decodes to %d", b, a)
		}
	})
}
