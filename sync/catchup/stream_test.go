package catchup

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// onlyReader hides any io.ByteReader of the reader it wraps.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestFrameRoundTrip(t *testing.T) {
	frames := [][]byte{{}, {1, 2}, bytes.Repeat([]byte{7}, 127), bytes.Repeat([]byte{8}, 128), bytes.Repeat([]byte{9}, 70000), bytes.Repeat([]byte{10}, 300000)}
	var buf bytes.Buffer
	for _, f := range frames {
		if err := WriteFrame(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		r    io.Reader
	}{
		{"ByteReader", bytes.NewReader(buf.Bytes())},
		{"plain Reader", onlyReader{bytes.NewReader(buf.Bytes())}},
	} {
		for i, want := range frames {
			got, err := ReadFrame(tt.r, 300000)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: frame %d = %d bytes, %v; want %d bytes", tt.name, i, len(got), err, len(want))
			}
		}
		if _, err := ReadFrame(tt.r, 300000); err != io.EOF {
			t.Errorf("%s: after the last frame: error = %v; want io.EOF", tt.name, err)
		}
	}
	if got, want := buf.Bytes()[:3], []byte{0, 2, 1}; !bytes.Equal(got, want) {
		t.Errorf("encoding starts %x; want %x (uvarint length, frame)", got, want)
	}
}

func TestReadFrameErrors(t *testing.T) {
	prefix := func(n uint64) []byte { return binary.AppendUvarint(nil, n) }
	tests := []struct {
		name  string
		in    []byte
		limit int
		want  error
	}{
		{"empty", nil, 10, io.EOF},
		{"prefix cut", []byte{0x80}, 10, io.ErrUnexpectedEOF},
		{"body cut", []byte{3, 1, 2}, 10, io.ErrUnexpectedEOF},
		{"over limit", cat(prefix(11), make([]byte, 11)), 10, ErrFrameTooLarge},
		{"huge length, nothing after", prefix(1 << 40), MaxFrameSize, ErrFrameTooLarge},
		{"max uint64 length", prefix(1<<64 - 1), MaxFrameSize, ErrFrameTooLarge},
		{"negative limit", []byte{1, 0}, -1, ErrFrameTooLarge},
		{"non-minimal prefix", []byte{0x81, 0x00, 1}, 10, ErrMalformed},
		{"prefix too long", bytes.Repeat([]byte{0x80}, 11), 10, ErrMalformed},
		{"prefix overflow", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, 10, ErrMalformed},
	}
	for _, tt := range tests {
		for _, r := range []io.Reader{bytes.NewReader(tt.in), onlyReader{bytes.NewReader(tt.in)}} {
			f, err := ReadFrame(r, tt.limit)
			if !errors.Is(err, tt.want) || f != nil {
				t.Errorf("%s (%T): ReadFrame = %d bytes, %v; want nil, %v", tt.name, r, len(f), err, tt.want)
			}
		}
	}
	t.Run("zero limit", func(t *testing.T) {
		f, err := ReadFrame(bytes.NewReader([]byte{0}), 0)
		if err != nil || f == nil || len(f) != 0 {
			t.Errorf("ReadFrame = %x, %v; want an empty frame", f, err)
		}
	})
	t.Run("read error", func(t *testing.T) {
		boom := errors.New("boom")
		if _, err := ReadFrame(io.MultiReader(bytes.NewReader([]byte{5, 1}), errReader{boom}), 10); !errors.Is(err, boom) {
			t.Errorf("error = %v; want %v", err, boom)
		}
	})
	t.Run("write error", func(t *testing.T) {
		a, b := net.Pipe()
		b.Close()
		if err := WriteFrame(a, []byte{1}); err == nil {
			t.Error("WriteFrame to a closed pipe: nil error")
		}
		a.Close()
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// drive runs s over conn the way the node runs it over a stream: write Start's frame, then
// read a frame, Handle it, write what it returns, until done. It closes conn when it returns, so
// a failure on one end unblocks the other.
func drive(conn net.Conn, s *Session, buffered bool) (received [][]byte, err error) {
	defer conn.Close()
	var r io.Reader = conn
	if buffered {
		r = bufio.NewReader(conn)
	}
	first, err := s.Start()
	if err != nil {
		return nil, err
	}
	if first != nil {
		if err := WriteFrame(conn, first); err != nil {
			return nil, err
		}
	}
	for {
		f, err := ReadFrame(r, MaxFrameSize)
		if err != nil {
			return received, err
		}
		out, recv, done, err := s.Handle(f)
		if err != nil {
			return received, err
		}
		received = append(received, recv...)
		for _, o := range out {
			if err := WriteFrame(conn, o); err != nil {
				return received, err
			}
		}
		if done {
			return received, nil
		}
	}
}

type driveResult struct {
	received [][]byte
	err      error
}

// pipePair runs ini and res over a net.Pipe, one goroutine each, and waits for both.
func pipePair(t *testing.T, ini, res *Session) (toIni, toRes driveResult) {
	t.Helper()
	c1, c2 := net.Pipe()
	deadline := time.Now().Add(time.Minute) // a hang fails the test instead of the run
	c1.SetDeadline(deadline)
	c2.SetDeadline(deadline)
	ch := make(chan driveResult)
	go func() {
		recv, err := drive(c2, res, true)
		ch <- driveResult{recv, err}
	}()
	recv, err := drive(c1, ini, false)
	toIni = driveResult{recv, err}
	toRes = <-ch
	return toIni, toRes
}

func TestPipe(t *testing.T) {
	tests := []struct {
		name     string
		a, b     []int
		size     int
		maxFrame int
	}{
		{"both empty", nil, nil, 64, 0},
		{"identical", keys(0, 100), keys(0, 100), 64, 0},
		{"initiator empty", nil, keys(0, 300), 200, MinFrameSize},
		{"responder empty", keys(0, 300), nil, 200, MinFrameSize},
		{"overlapping 4KiB", keys(0, 1000), keys(500, 2000), 300, MinFrameSize},
		{"overlapping default", keys(0, 1000), keys(500, 2000), 1000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := sourceOf(tt.size, tt.a...), sourceOf(tt.size, tt.b...)
			u := union(a, b)
			ini, res := NewInitiator(a, tt.maxFrame), NewResponder(b, tt.maxFrame)
			toIni, toRes := pipePair(t, ini, res)
			if toIni.err != nil || toRes.err != nil {
				t.Fatalf("initiator error %v, responder error %v; want none", toIni.err, toRes.err)
			}
			aBefore, bBefore := a.clone(), b.clone()
			store(t, "initiator", a, bBefore, toIni.received)
			store(t, "responder", b, aBefore, toRes.received)
			if !sameIDs(a, u) || !sameIDs(b, u) {
				t.Errorf("after the run: initiator %d ids, responder %d ids; want both %d", len(a.envs), len(b.envs), len(u))
			}
			si, sr := ini.Stats(), res.Stats()
			if si.BytesSent != sr.BytesReceived || sr.BytesSent != si.BytesReceived {
				t.Errorf("bytes: initiator sent %d, responder received %d; responder sent %d, initiator received %d",
					si.BytesSent, sr.BytesReceived, sr.BytesSent, si.BytesReceived)
			}
		})
	}
}

// TestPipeBadPeer: a peer that sends garbage makes the other end fail, and both goroutines end.
func TestPipeBadPeer(t *testing.T) {
	c1, c2 := net.Pipe()
	deadline := time.Now().Add(time.Minute)
	c1.SetDeadline(deadline)
	c2.SetDeadline(deadline)
	ch := make(chan error)
	go func() {
		_, err := drive(c2, NewResponder(sourceOf(64, keys(0, 10)...), 0), false)
		ch <- err
	}()
	if err := WriteFrame(c1, []byte{1, 9, 9, 9}); err != nil {
		t.Fatal(err)
	}
	if err := <-ch; !errors.Is(err, ErrMalformed) {
		t.Errorf("responder error = %v; want %v", err, ErrMalformed)
	}
	if _, err := ReadFrame(c1, MaxFrameSize); err != io.EOF {
		t.Errorf("initiator side read after the responder failed: %v; want io.EOF", err)
	}
	c1.Close()
}

// TestPipeOversizedPrefix: a peer announcing a huge frame is refused before anything is
// allocated.
func TestPipeOversizedPrefix(t *testing.T) {
	c1, c2 := net.Pipe()
	ch := make(chan error)
	go func() {
		_, err := drive(c2, NewResponder(newSource(), 0), false)
		ch <- err
	}()
	// The responder stops reading after the prefix: write it alone.
	if _, err := c1.Write(binary.AppendUvarint(nil, 1<<40)); err != nil {
		t.Fatal(err)
	}
	if err := <-ch; !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("responder error = %v; want %v", err, ErrFrameTooLarge)
	}
	c1.Close()
}
