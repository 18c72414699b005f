package device

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// Errors of Reconcile.
var (
	// ErrReconcileStalled: the sessions stopped exchanging frames before
	// both were done, or exceeded ReconcileOptions.MaxFrames.
	ErrReconcileStalled = errors.New("device: reconciliation stalled")
	// ErrPeerBanned: a side's Receive banned the other side (Effects.Ban),
	// so the exchange ended as the node ends it: it drops the stream.
	ErrPeerBanned = errors.New("device: reconciliation ended: the peer was banned")
)

// Side is one end of a Reconcile: one device's copy of the team, a view of
// what its store holds, and the way to make effects durable. Every field
// but Now is required.
type Side struct {
	// Team is the device's core: the envelopes its session receives go to
	// Team.Receive, one call per flight of frames.
	Team *Team
	// Store lists what the device's store holds of the team's topic:
	// items sorted by (Time, ID), and each envelope's bytes by id (the node
	// backs it with storage). The session reads Items once, when it starts,
	// and asks for envelopes of those items only; what Apply stores while the
	// exchange runs is not offered to the peer until the next Reconcile.
	Store recon.Source
	// Apply makes the effects of one Receive durable (their Write, in one
	// atomic write) and acts on the rest (Publish, Sync, Ban, Reopen: it may
	// give the Team what to reopen), before Reconcile goes on. An error ends
	// Reconcile with that error: the Team is ahead of its store, and the
	// caller discards it and restores it with New (see Durability in the
	// package documentation).
	Apply func(Effects) error
	// Peer is this device as the other side's core sees it: the From of
	// every envelope this side's session hands the other.
	Peer Peer
	// Now is this device's clock reading, given to Receive: each device's
	// own, possibly skewed, time.
	Now time.Time
}

// LinkFaults are what goes wrong on the way to one side of a Reconcile:
// envelopes its session received are lost, repeated or reordered before
// its Team sees them (a lossy transport, a crash between receipt and
// storage, a peer that repeats itself), and frames are mangled before its
// session reads them (a peer that sends garbage frames; an honest link
// never does, since Noise authenticates every frame). The sessions do not
// know. The zero value injects nothing.
type LinkFaults struct {
	// Rand decides the faults; nil means none.
	Rand *rand.Rand
	// Drop is the probability that a received envelope is lost.
	Drop float64
	// Duplicate is the probability that a received envelope is given to
	// Receive twice.
	Duplicate float64
	// Reorder gives each flight's envelopes to Receive in random order.
	Reorder bool
	// Mangle is the probability that a frame is mangled (a bit flipped,
	// cut short, lengthened, or its version byte changed) before this
	// side's session reads it. Envelopes inside a mangled frame that still
	// decodes count against the peer that sent it.
	Mangle float64
}

// ReconcileOptions configures Reconcile. The zero value works: default
// frames, a random session salt, no faults.
type ReconcileOptions struct {
	// MaxFrame is the largest frame a session sends, in bytes: 0 means
	// recon.DefaultFrameSize (64 KiB); recon clamps the rest to
	// [recon.MinFrameSize, recon.MaxFrameSize].
	MaxFrame int
	// Rand supplies the initiator's session salt; nil means crypto/rand. A
	// deterministic Rand makes the whole exchange replay.
	Rand io.Reader
	// ToInitiator and ToResponder are the faults on the way to each side.
	ToInitiator, ToResponder LinkFaults
	// MaxFrames bounds the frames of one run, both directions; 0 means
	// 1<<20. Exceeding it fails with ErrReconcileStalled.
	MaxFrames int
}

// SideStats counts what one side got from a Reconcile.
type SideStats struct {
	// Session is its recon session's counters (frames, bytes, envelopes,
	// round trips).
	Session recon.Stats
	// Received is the envelopes its session received; Dropped and
	// Duplicated those its LinkFaults lost or repeated; Mangled the frames
	// they mangled.
	Received, Dropped, Duplicated, Mangled int
	// Verdicts counts Receive's verdicts on what was delivered.
	Verdicts map[Verdict]int
	// Effects are the effects of its Receive calls, merged. Apply has
	// already been given each of them.
	Effects Effects
}

// ReconcileResult is what a Reconcile did.
type ReconcileResult struct {
	Initiator, Responder SideStats
	// Frames and Bytes are the frames and frame bytes exchanged, both
	// directions.
	Frames, Bytes int
}

// Reconcile runs one reconciliation of a team between a (the initiator) and
// b (the responder) in memory: what the node does over a libp2p stream, for
// tests and the simulator. It feeds each recon session's frames to the
// other until both are done, gives the envelopes each session receives to
// its side's Team.Receive (through the LinkFaults on the way to that side),
// and each Receive's effects to its side's Apply. It does not check
// Team.MaySync: the caller decides whom to reconcile with, as the node
// does before it opens a stream.
//
// It fails, leaving each side with what it received and applied so far,
// when a session fails (a malformed or unexpected frame: the error wraps
// sync/recon's), when an Apply fails (the error wraps Apply's), when a side
// bans the other (ErrPeerBanned), or with ErrReconcileStalled. The result
// counts what happened up to then.
//
// It is sans-I/O and runs on the caller's goroutine; it calls each Team as
// the node does, so nothing but the sides' Apply may use either Team while
// it runs.
func Reconcile(a, b Side, opt ReconcileOptions) (res ReconcileResult, err error) {
	res.Initiator.Verdicts = make(map[Verdict]int)
	res.Responder.Verdicts = make(map[Verdict]int)
	for _, s := range []*Side{&a, &b} {
		if s.Team == nil || s.Store == nil || s.Apply == nil {
			return res, fmt.Errorf("%w: a reconciliation side needs a Team, a Store and Apply", ErrConfig)
		}
	}
	maxFrames := opt.MaxFrames
	if maxFrames <= 0 {
		maxFrames = 1 << 20
	}
	cfg := recon.Config{MaxFrame: opt.MaxFrame, Rand: opt.Rand}
	ends := [2]*reconEnd{
		{side: &a, peer: &b, name: "initiator", faults: opt.ToInitiator, stats: &res.Initiator, session: recon.NewInitiatorConfig(a.Store, cfg)},
		{side: &b, peer: &a, name: "responder", faults: opt.ToResponder, stats: &res.Responder, session: recon.NewResponderConfig(b.Store, cfg)},
	}
	defer func() {
		res.Initiator.Session = ends[0].session.Stats()
		res.Responder.Session = ends[1].session.Stats()
	}()
	first, err := ends[0].session.Start()
	if err != nil {
		return res, fmt.Errorf("device: reconcile: initiator start: %w", err)
	}
	// Frames in flight to each end. A responder speaks only when spoken to,
	// and the exchange is half-duplex: one queue at a time holds frames.
	queues := [2][][]byte{nil, {first}}
	var done [2]bool
	for len(queues[0]) > 0 || len(queues[1]) > 0 {
		if res.Frames >= maxFrames {
			return res, fmt.Errorf("%w: %d frames", ErrReconcileStalled, res.Frames)
		}
		to := 1
		if len(queues[1]) == 0 {
			to = 0
		}
		f := queues[to][0]
		queues[to] = queues[to][1:]
		res.Frames++
		res.Bytes += len(f)
		e := ends[to]
		out, recv, d, err := e.session.Handle(e.mangle(f))
		if err != nil {
			return res, fmt.Errorf("device: reconcile: %s: %w", e.name, err)
		}
		done[to] = d
		queues[1-to] = append(queues[1-to], out...)
		if err := e.deliver(recv); err != nil {
			return res, fmt.Errorf("device: reconcile: %s: %w", e.name, err)
		}
	}
	if !done[0] || !done[1] {
		return res, fmt.Errorf("%w: initiator done %v, responder done %v", ErrReconcileStalled, done[0], done[1])
	}
	return res, nil
}

// reconEnd is one side of a running Reconcile.
type reconEnd struct {
	side, peer *Side
	name       string
	faults     LinkFaults
	stats      *SideStats
	session    *recon.Session
}

// mangle returns f, or a mangled copy of it if the faults say so.
func (e *reconEnd) mangle(f []byte) []byte {
	r := e.faults.Rand
	if r == nil || r.Float64() >= e.faults.Mangle {
		return f
	}
	e.stats.Mangled++
	f = bytes.Clone(f)
	switch r.IntN(4) {
	case 0:
		if len(f) > 0 {
			f[r.IntN(len(f))] ^= 1 << r.IntN(8)
		}
	case 1:
		f = f[:r.IntN(len(f)+1)]
	case 2:
		f = append(f, byte(r.Uint32()), byte(r.Uint32()))
	default:
		if len(f) > 0 {
			f[0] ^= 0xff
		}
	}
	return f
}

// deliver gives one flight's envelopes to the side's Team through the
// faults, and the effects to its Apply.
func (e *reconEnd) deliver(recv [][]byte) error {
	e.stats.Received += len(recv)
	r := e.faults.Rand
	arrivals := make([]Arrival, 0, len(recv))
	for _, raw := range recv {
		n := 1
		if r != nil {
			switch x := r.Float64(); {
			case x < e.faults.Drop:
				e.stats.Dropped++
				continue
			case x < e.faults.Drop+e.faults.Duplicate:
				e.stats.Duplicated++
				n = 2
			}
		}
		for range n {
			arrivals = append(arrivals, Arrival{Raw: raw, From: e.peer.Peer})
		}
	}
	if r != nil && e.faults.Reorder {
		r.Shuffle(len(arrivals), func(i, j int) { arrivals[i], arrivals[j] = arrivals[j], arrivals[i] })
	}
	if len(arrivals) == 0 {
		return nil
	}
	verdicts, eff := e.side.Team.Receive(e.side.Now, arrivals)
	for _, v := range verdicts {
		e.stats.Verdicts[v]++
	}
	if err := e.side.Apply(eff); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	e.stats.Effects.merge(eff)
	for _, p := range eff.Ban {
		if p.ID == e.peer.Peer.ID {
			return fmt.Errorf("%w: %q", ErrPeerBanned, p.ID)
		}
	}
	return nil
}
