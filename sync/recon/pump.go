package recon

import (
	"bufio"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// Pump drives a Session over a stream: the one sync driver of devices and clinic relays. Run sends
// the session's first frames, then reads each frame the peer sends, hands the envelopes received to
// Deliver in flights, and sends the session's answer, until the session is done.
//
// A flight is what arrives between two answers: the envelopes of several frames are delivered at once
// (a device's core judges them in one Receive, a relay stores them in one write) when the session has
// something to send, is done, or the flight holds MaxFlight bytes. Nothing is answered before the
// flight it follows is delivered, so a peer never hears back before what it sent is kept.
type Pump struct {
	// MaxFlight bounds the bytes of envelopes delivered at once. Zero delivers after every frame.
	MaxFlight int
	// Deliver takes a flight of received envelopes (raw, unchecked). An error ends the session.
	Deliver func(envelopes [][]byte) error
	// Sent and Received, if set, are told the size of each frame (after the length prefix) as it goes.
	Sent, Received func(bytes int)
	// BadFrame, if set, is told of a frame the session refused (the peer sent garbage) before Run
	// returns the error.
	BadFrame func(error)
}

// Run drives sess until it is done (nil) or something fails; out are the frames to send first (those
// NewInitiator's Start returned, or none for a responder). The caller closes the stream.
func (p Pump) Run(w io.Writer, r io.Reader, sess *Session, out [][]byte) error {
	bw := bufio.NewWriter(w)
	send := func(frames [][]byte) error {
		for _, f := range frames {
			if f == nil {
				continue
			}
			if err := framing.Write(bw, f); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			if p.Sent != nil {
				p.Sent(len(f))
			}
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return nil
	}
	if err := send(out); err != nil {
		return err
	}
	var flight [][]byte
	flightBytes := 0
	for {
		frame, err := framing.Read(r, MaxFrameSize)
		if err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		if p.Received != nil {
			p.Received(len(frame))
		}
		out, recv, done, err := sess.Handle(frame)
		if err != nil {
			if p.BadFrame != nil {
				p.BadFrame(err)
			}
			return fmt.Errorf("bad frame: %w", err)
		}
		flight = append(flight, recv...)
		for _, e := range recv {
			flightBytes += len(e)
		}
		if out == nil && !done && flightBytes < p.MaxFlight {
			continue // the flight goes on
		}
		if len(flight) > 0 {
			if err := p.Deliver(flight); err != nil {
				return err
			}
			flight, flightBytes = nil, 0
		}
		if err := send(out); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}
