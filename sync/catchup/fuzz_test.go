package catchup

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzStates builds sessions in each state FuzzHandle starts from.
var fuzzStates = []func(*testing.T) *Session{
	freshResponder,
	responderAwaitingGive,
	initiatorAwaitingNext,
	initiatorAwaitingGive,
	initiatorAwaitingWant,
	doneResponder,
	doneInitiator,
}

// frames encodes frames with WriteFrame, the input format of FuzzHandle.
func frames(fs ...[]byte) []byte {
	var b bytes.Buffer
	for _, f := range fs {
		WriteFrame(&b, f)
	}
	return b.Bytes()
}

// FuzzHandle feeds arbitrary frames to sessions in every state. which%len(fuzzStates) picks the
// state; with which&0x80 data is one raw frame, otherwise a sequence of frames as written by
// WriteFrame. Handle must not panic, its errors must be final, the frames it returns must fit
// maxFrame and decode, and a finished session must accept nothing more.
func FuzzHandle(f *testing.F) {
	ks := sorted(1, 2, 3)
	f.Add(frames(haveFrame(false, ks...)), uint8(0))
	f.Add(frames(haveFrame(true, ks[0]), haveFrame(false, ks[1:]...)), uint8(0))
	f.Add(haveFrame(false, sorted(3, 4, 9)...), uint8(0x80))
	f.Add(frames(giveFrame(true, sorted(1, 2)[0]), giveFrame(false, sorted(1, 2)[1])), uint8(1))
	f.Add(giveFrame(false, sorted(1, 2)...), uint8(0x81))
	f.Add(frames(nextFrame(), nextFrame(), giveFrame(false, 301), wantFrame(false, 7)), uint8(2))
	f.Add(frames(giveFrame(false, sorted(4, 5)...), wantFrame(false, sorted(1, 3)...)), uint8(3))
	f.Add(wantFrame(false, sorted(1, 2, 3)...), uint8(0x84))
	f.Add(frames(wantFrame(true, 2), wantFrame(false)), uint8(4))
	f.Add(frames(giveFrame(false)), uint8(5))
	f.Add(frames(wantFrame(false)), uint8(6))
	f.Add([]byte{1, 1, 0, 0x80, 0}, uint8(0x80))
	f.Add([]byte{}, uint8(0x83))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		s := fuzzStates[int(which&0x7f)%len(fuzzStates)](t)
		var in [][]byte
		if which&0x80 != 0 {
			in = [][]byte{data}
		} else {
			r := bytes.NewReader(data)
			for {
				fr, err := ReadFrame(r, MaxFrameSize)
				if err != nil {
					break
				}
				in = append(in, fr)
			}
		}
		done := s.state == stateDone
		var received int
		for _, fr := range in {
			out, recv, d, err := s.Handle(fr)
			if done && err == nil {
				t.Fatalf("a finished session accepted %x", fr)
			}
			if err != nil {
				if out != nil || recv != nil || d {
					t.Fatalf("Handle returned output with error %v", err)
				}
				if _, _, _, err2 := s.Handle(fr); err2 != err {
					t.Fatalf("error not final: %v, then %v", err, err2)
				}
				return
			}
			for _, o := range out {
				if len(o) > s.maxFrame {
					t.Fatalf("sent a frame of %d bytes; maxFrame %d", len(o), s.maxFrame)
				}
				if _, err := parseFrame(o); err != nil {
					t.Fatalf("sent a frame that does not decode: %v", err)
				}
			}
			received += len(recv)
			if uint64(received) != s.Stats().EnvelopesReceived {
				t.Fatalf("received %d envelopes; Stats says %d", received, s.Stats().EnvelopesReceived)
			}
			done = d
		}
	})
}

// FuzzReadFrame reads frames from arbitrary bytes, through an io.ByteReader and a plain
// io.Reader: both must agree, never exceed the limit, and every frame read must re-encode to
// exactly the bytes it was read from.
func FuzzReadFrame(f *testing.F) {
	f.Add(frames([]byte{1, 2, 3}, nil, bytes.Repeat([]byte{4}, 200)), uint32(300))
	f.Add([]byte{0x80}, uint32(10))
	f.Add([]byte{0x81, 0x00, 1}, uint32(10))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, uint32(MaxFrameSize))
	f.Add([]byte{5, 1, 2}, uint32(10))
	f.Fuzz(func(t *testing.T, data []byte, limit uint32) {
		lim := int(limit % (MaxFrameSize + 1))
		r1, r2 := bytes.NewReader(data), onlyReader{bytes.NewReader(data)}
		for {
			start := len(data) - r1.Len()
			f1, err1 := ReadFrame(r1, lim)
			f2, err2 := ReadFrame(r2, lim)
			if !bytes.Equal(f1, f2) || (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
				t.Fatalf("ByteReader: %x, %v; plain Reader: %x, %v", f1, err1, f2, err2)
			}
			if err1 != nil {
				if f1 != nil {
					t.Fatalf("frame %x returned with error %v", f1, err1)
				}
				if !errors.Is(err1, ErrMalformed) && !errors.Is(err1, ErrFrameTooLarge) && err1 != io.EOF && err1 != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error %v", err1)
				}
				return
			}
			if len(f1) > lim {
				t.Fatalf("frame of %d bytes; limit %d", len(f1), lim)
			}
			var b bytes.Buffer
			if err := WriteFrame(&b, f1); err != nil {
				t.Fatal(err)
			}
			if end := len(data) - r1.Len(); !bytes.Equal(b.Bytes(), data[start:end]) {
				t.Fatalf("frame re-encodes to %x; read from %x", b.Bytes(), data[start:end])
			}
		}
	})
}
