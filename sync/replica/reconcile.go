package replica

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// ErrStalled is returned by Reconcile when the sessions stop exchanging
// frames before both are done, or exceed Options.MaxFrames.
var ErrStalled = errors.New("replica: reconciliation stalled")

// Faults injects faults into the envelopes that Reconcile delivers to the
// replicas (after the sessions received them, before Accept): what a lossy
// transport, a crash between receipt and storage, or a peer that repeats
// itself would do. The sessions do not know.
type Faults struct {
	// Rand decides the faults; nil means no faults.
	Rand *rand.Rand
	// Drop is the probability that a received envelope is lost.
	Drop float64
	// Duplicate is the probability that a received envelope is delivered
	// twice.
	Duplicate float64
	// Reorder delivers each batch of received envelopes in random order.
	Reorder bool
}

// Options configures Reconcile. The zero value runs sync/catchup with
// default frames and no faults.
type Options struct {
	// Protocol is the reconciliation protocol; the zero value means Catchup.
	Protocol Protocol
	// MaxFrame is the largest frame a session sends, in bytes; 0 means the
	// protocol's default.
	MaxFrame int
	// Faults are injected into delivered envelopes.
	Faults Faults
	// MaxFrames bounds the frames of one run, both directions; 0 means
	// 1<<20. Exceeding it fails with ErrStalled.
	MaxFrames int
}

// Side counts what one replica got from a Reconcile.
type Side struct {
	Received   int // envelopes its session received
	Dropped    int // of those, lost by Faults
	Duplicated int // delivered twice by Faults
	Added      int // new envelopes stored
}

// Result is what a Reconcile did.
type Result struct {
	Initiator, Responder Side
	Frames, Bytes        int // frames and frame bytes exchanged, both directions
}

// Reconcile runs one reconciliation between a (the initiator) and b (the
// responder) in memory, as two nodes would over a stream: it feeds each
// session's frames to the other until both are done, and delivers the
// envelopes each session receives to its replica's Accept, through
// opt.Faults. It is sans-I/O and runs on the caller's goroutine.
//
// It fails, leaving both replicas with whatever valid envelopes they
// accepted so far, when a session fails (a malformed or unexpected frame:
// the error wraps the protocol's error), when a replica rejects an envelope
// (the error wraps ErrRejected: the peer sent garbage and is dropped), or
// with ErrStalled.
func Reconcile(a, b *Replica, opt Options) (Result, error) {
	p := opt.Protocol
	if p.NewInitiator == nil || p.NewResponder == nil {
		p = Catchup
	}
	maxFrames := opt.MaxFrames
	if maxFrames <= 0 {
		maxFrames = 1 << 20
	}
	var res Result
	ini := p.NewInitiator(a, opt.MaxFrame)
	rsp := p.NewResponder(b, opt.MaxFrame)
	first, err := ini.Start()
	if err != nil {
		return res, fmt.Errorf("replica: reconcile (%s): initiator start: %w", p.Name, err)
	}
	var toRsp, toIni [][]byte
	if first != nil {
		toRsp = append(toRsp, first)
	}
	if f, err := rsp.Start(); err != nil {
		return res, fmt.Errorf("replica: reconcile (%s): responder start: %w", p.Name, err)
	} else if f != nil {
		toIni = append(toIni, f)
	}
	var iniDone, rspDone bool
	for len(toRsp) > 0 || len(toIni) > 0 {
		if res.Frames >= maxFrames {
			return res, fmt.Errorf("%w: %d frames", ErrStalled, res.Frames)
		}
		// Deliver to the responder first, then the initiator: with
		// half-duplex protocols only one side has frames in flight.
		var (
			s     Session
			r     *Replica
			side  *Side
			done  *bool
			name  string
			reply *[][]byte
			f     []byte
		)
		if len(toRsp) > 0 {
			f, toRsp = toRsp[0], toRsp[1:]
			s, r, side, done, name, reply = rsp, b, &res.Responder, &rspDone, "responder", &toIni
		} else {
			f, toIni = toIni[0], toIni[1:]
			s, r, side, done, name, reply = ini, a, &res.Initiator, &iniDone, "initiator", &toRsp
		}
		res.Frames++
		res.Bytes += len(f)
		out, recv, d, err := s.Handle(f)
		if err != nil {
			return res, fmt.Errorf("replica: reconcile (%s): %s: %w", p.Name, name, err)
		}
		*done = d
		*reply = append(*reply, out...)
		if err := deliver(r, recv, side, opt.Faults); err != nil {
			return res, fmt.Errorf("replica: reconcile (%s): %s: %w", p.Name, name, err)
		}
	}
	if !iniDone || !rspDone {
		return res, fmt.Errorf("%w: initiator done %v, responder done %v", ErrStalled, iniDone, rspDone)
	}
	return res, nil
}

// deliver gives received envelopes to r.Accept through the faults.
func deliver(r *Replica, recv [][]byte, side *Side, f Faults) error {
	side.Received += len(recv)
	if f.Rand != nil && f.Reorder {
		f.Rand.Shuffle(len(recv), func(i, j int) { recv[i], recv[j] = recv[j], recv[i] })
	}
	for _, env := range recv {
		n := 1
		if f.Rand != nil {
			switch x := f.Rand.Float64(); {
			case x < f.Drop:
				side.Dropped++
				continue
			case x < f.Drop+f.Duplicate:
				side.Duplicated++
				n = 2
			}
		}
		for range n {
			added, err := r.Accept(env)
			if err != nil {
				return err
			}
			if added {
				side.Added++
			}
		}
	}
	return nil
}
