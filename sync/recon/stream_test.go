package recon

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// pump drives one session over a connection with the shipped driver (Pump), and returns the
// envelopes received.
func pump(c net.Conn, s *Session, first []byte) ([][]byte, error) {
	var received [][]byte
	var out [][]byte
	if first != nil {
		out = [][]byte{first}
	}
	err := Pump{MaxFlight: 64 << 10, Deliver: func(f [][]byte) error {
		received = append(received, f...)
		return nil
	}}.Run(c, bufio.NewReader(c), s, out)
	return received, err
}

// TestPumpBadFrame: a frame the session refuses ends Run with an error, reported to BadFrame, and
// nothing of it is delivered.
func TestPumpBadFrame(t *testing.T) {
	ca, cb := net.Pipe()
	defer ca.Close()
	defer cb.Close()
	go func() { _ = WriteFrame(cb, []byte{0xff, 0xff, 0xff}) }()
	var bad error
	delivered := 0
	err := Pump{Deliver: func(f [][]byte) error { delivered += len(f); return nil }, BadFrame: func(e error) { bad = e }}.
		Run(ca, bufio.NewReader(ca), NewResponder(newTestSource(10, nil), 0), nil)
	if err == nil || bad == nil || delivered != 0 {
		t.Errorf("a garbage frame: Run %v, BadFrame %v, %d delivered; want an error reported, nothing delivered", err, bad, delivered)
	}
}

// TestOverPipe runs both ends over net.Pipe, each a sequential read-handle-write loop: the
// exchange is half-duplex, so an unbuffered pipe cannot deadlock, and both ends finish.
func TestOverPipe(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, maxFrame := range []int{MinFrameSize, 0} {
		a := newTestSource(6000, itemsOf(hlcStep, scatter(r, keys(0, 3000), 200)...))
		b := newTestSource(6000, itemsOf(hlcStep, keys(0, 3100)...))
		ini, res := NewInitiator(a, maxFrame), NewResponder(b, maxFrame)
		ca, cb := net.Pipe()
		deadline := time.Now().Add(time.Minute)
		ca.SetDeadline(deadline)
		cb.SetDeadline(deadline)
		type result struct {
			recv [][]byte
			err  error
		}
		resCh := make(chan result, 1)
		go func() {
			recv, err := pump(cb, res, nil)
			resCh <- result{recv, err}
		}()
		first, err := ini.Start()
		if err != nil {
			t.Fatal(err)
		}
		toIni, errIni := pump(ca, ini, first)
		rr := <-resCh
		ca.Close()
		cb.Close()
		if errIni != nil || rr.err != nil {
			t.Fatalf("initiator: %v; responder: %v", errIni, rr.err)
		}
		if got, want := len(checkReceived(t, "initiator", a, b, toIni)), missingFrom(a, b); got != want {
			t.Errorf("initiator received %d envelopes; want %d", got, want)
		}
		if got, want := len(checkReceived(t, "responder", b, a, rr.recv)), missingFrom(b, a); got != want {
			t.Errorf("responder received %d envelopes; want %d", got, want)
		}
	}
}

func TestReadFrame(t *testing.T) {
	frame := bytes.Repeat([]byte{7}, 200<<10)
	var buf bytes.Buffer
	if err := WriteFrame(&buf, frame); err != nil {
		t.Fatal(err)
	}
	wire := buf.Bytes()
	tests := []struct {
		name  string
		in    []byte
		limit int
		want  []byte
		err   error
	}{
		{"frame", wire, MaxFrameSize, frame, nil},
		{"empty frame", []byte{0}, 10, []byte{}, nil},
		{"clean end", nil, 10, nil, io.EOF},
		{"end in prefix", []byte{0x80}, 10, nil, io.ErrUnexpectedEOF},
		{"end in frame", wire[:1000], MaxFrameSize, nil, io.ErrUnexpectedEOF},
		{"over limit", wire, 100 << 10, nil, ErrFrameTooLarge},
		{"non-minimal prefix", []byte{0x81, 0x00, 1}, 10, nil, ErrMalformed},
		{"prefix too long", bytes.Repeat([]byte{0xff}, 11), 10, nil, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []io.Reader{bytes.NewReader(tt.in), bufio.NewReader(bytes.NewReader(tt.in)), io.MultiReader(bytes.NewReader(tt.in))} {
				got, err := ReadFrame(r, tt.limit)
				if !errors.Is(err, tt.err) {
					t.Fatalf("ReadFrame = %v; want %v", err, tt.err)
				}
				if tt.err == nil && !bytes.Equal(got, tt.want) {
					t.Fatalf("ReadFrame returned %d bytes; want %d", len(got), len(tt.want))
				}
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken") }

func TestWriteFrameError(t *testing.T) {
	if err := WriteFrame(failWriter{}, []byte{1}); err == nil {
		t.Fatal("WriteFrame to a broken writer succeeded")
	}
}
