package catchup

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errNotFound = errors.New("memsource: not found")

// memSource is a map-backed Source. Test envelopes start with their id, so a receiver can tell
// which envelope it got.
type memSource struct {
	times    map[[32]byte]uint64
	envs     map[[32]byte][]byte
	itemsErr error  // returned by Items when set
	envErr   error  // returned by Envelope when set
	items    []Item // sorted cache of Items; nil after put
}

func newSource() *memSource {
	return &memSource{times: map[[32]byte]uint64{}, envs: map[[32]byte][]byte{}}
}

// keyID is the id of test envelope k.
func keyID(k int) [32]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(k))
	return sha256.Sum256(b[:])
}

// testEnvelope is envelope k: its id followed by filler, size bytes in all (at least 32).
func testEnvelope(k, size int) []byte {
	id := keyID(k)
	env := make([]byte, max(size, idLen))
	copy(env, id[:])
	for i := idLen; i < len(env); i++ {
		env[i] = byte(k + i)
	}
	return env
}

// sourceOf returns a source holding envelopes keys of size bytes each.
func sourceOf(size int, keys ...int) *memSource {
	m := newSource()
	for _, k := range keys {
		m.put(uint64(k), testEnvelope(k, size))
	}
	return m
}

func (m *memSource) put(t uint64, env []byte) {
	id := [32]byte(env)
	m.times[id] = t
	m.envs[id] = env
	m.items = nil
}

func (m *memSource) Items() ([]Item, error) {
	if m.itemsErr != nil {
		return nil, m.itemsErr
	}
	if m.items != nil {
		return slices.Clone(m.items), nil
	}
	items := make([]Item, 0, len(m.times))
	for id, t := range m.times {
		items = append(items, Item{Time: t, ID: id})
	}
	slices.SortFunc(items, func(a, b Item) int {
		return cmp.Or(cmp.Compare(a.Time, b.Time), compareID(a.ID, b.ID))
	})
	m.items = items
	return slices.Clone(items), nil
}

func (m *memSource) Envelope(id [32]byte) ([]byte, error) {
	if m.envErr != nil {
		return nil, m.envErr
	}
	env, ok := m.envs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %x", errNotFound, id[:4])
	}
	return env, nil
}

func (m *memSource) clone() *memSource {
	c := newSource()
	for id, env := range m.envs {
		c.put(m.times[id], env)
	}
	return c
}

func keys(from, to int) []int {
	var ks []int
	for k := from; k < to; k++ {
		ks = append(ks, k)
	}
	return ks
}

// message is one frame on its way, for transcripts.
type message struct {
	toResponder bool
	frame       []byte
}

// runResult is what an in-memory run produced.
type runResult struct {
	toInitiator, toResponder [][]byte // envelopes received, in order
	transcript               []message
	initiator, responder     Stats
}

// run drives ini and res against each other in memory until both are done, checking the
// protocol's shape on the way: every frame fits the sender's maxFrame, the exchange is
// half-duplex (never both sides with frames in flight, which is what lets a sequential
// read-handle-write loop run it over one stream without deadlock), nothing reaches a finished
// side, and it terminates.
func run(tb testing.TB, ini, res *Session) runResult {
	tb.Helper()
	var r runResult
	first, err := ini.Start()
	if err != nil {
		tb.Fatalf("initiator Start: %v", err)
	}
	if f, err := res.Start(); f != nil || err != nil {
		tb.Fatalf("responder Start = %x, %v; want nil, nil", f, err)
	}
	toRes, toIni := [][]byte{first}, [][]byte(nil)
	var iniDone, resDone bool
	for steps := 0; len(toRes) > 0 || len(toIni) > 0; steps++ {
		if steps > 10_000_000 {
			tb.Fatalf("no termination after %d frames", steps)
		}
		if len(toRes) > 0 && len(toIni) > 0 {
			tb.Fatalf("both sides have frames in flight: not half-duplex")
		}
		toResponder := len(toRes) > 0
		s, q, done, sender := res, &toRes, &resDone, ini
		if !toResponder {
			s, q, done, sender = ini, &toIni, &iniDone, res
		}
		f := (*q)[0]
		*q = (*q)[1:]
		if len(f) > sender.maxFrame {
			tb.Fatalf("frame of %d bytes exceeds the sender's maxFrame %d", len(f), sender.maxFrame)
		}
		if *done {
			tb.Fatalf("frame %x... sent to a side that is done", f[:min(len(f), 8)])
		}
		r.transcript = append(r.transcript, message{toResponder, f})
		out, recv, d, err := s.Handle(f)
		if err != nil {
			tb.Fatalf("Handle (to responder %v): %v", toResponder, err)
		}
		*done = d
		if toResponder {
			r.toResponder = append(r.toResponder, recv...)
			toIni = append(toIni, out...)
		} else {
			r.toInitiator = append(r.toInitiator, recv...)
			toRes = append(toRes, out...)
		}
	}
	if !iniDone || !resDone {
		tb.Fatalf("exchange stalled: initiator done %v, responder done %v", iniDone, resDone)
	}
	r.initiator, r.responder = ini.Stats(), res.Stats()
	return r
}

// store stores received envelopes into m as the node would, failing the test if m already had
// one (sent although the peer had it) or one arrives twice, or one differs from the original in
// peer.
func store(tb testing.TB, who string, m, peer *memSource, received [][]byte) {
	tb.Helper()
	for _, env := range received {
		if len(env) < idLen {
			tb.Fatalf("%s received a %d-byte envelope", who, len(env))
		}
		id := [32]byte(env)
		if _, ok := m.envs[id]; ok {
			tb.Fatalf("%s received %x, which it already had", who, id[:4])
		}
		if !bytes.Equal(env, peer.envs[id]) {
			tb.Fatalf("%s received %x with different bytes than the peer holds", who, id[:4])
		}
		m.put(peer.times[id], env)
	}
}

// union returns the set of ids of a and b.
func union(a, b *memSource) map[[32]byte]bool {
	u := map[[32]byte]bool{}
	for id := range a.envs {
		u[id] = true
	}
	for id := range b.envs {
		u[id] = true
	}
	return u
}

// missing returns how many of b's ids a lacks.
func missing(a, b *memSource) int {
	n := 0
	for id := range b.envs {
		if _, ok := a.envs[id]; !ok {
			n++
		}
	}
	return n
}

func sameIDs(m *memSource, want map[[32]byte]bool) bool {
	if len(m.envs) != len(want) {
		return false
	}
	for id := range m.envs {
		if !want[id] {
			return false
		}
	}
	return true
}

// syncPair runs a catch-up between copies of a (initiator) and b (responder), stores what each
// received, and checks that both end with the union. It returns the run.
func syncPair(tb testing.TB, a, b *memSource, maxFrame int) runResult {
	tb.Helper()
	a, b = a.clone(), b.clone()
	u := union(a, b)
	wantI, wantR := missing(a, b), missing(b, a)
	r := run(tb, NewInitiator(a, maxFrame), NewResponder(b, maxFrame))
	if got, want := len(r.toInitiator), wantI; got != want {
		tb.Errorf("initiator received %d envelopes; want %d", got, want)
	}
	if got, want := len(r.toResponder), wantR; got != want {
		tb.Errorf("responder received %d envelopes; want %d", got, want)
	}
	aBefore, bBefore := a.clone(), b.clone()
	store(tb, "initiator", a, bBefore, r.toInitiator)
	store(tb, "responder", b, aBefore, r.toResponder)
	if !sameIDs(a, u) {
		tb.Errorf("initiator holds %d ids after the run; want the union, %d", len(a.envs), len(u))
	}
	if !sameIDs(b, u) {
		tb.Errorf("responder holds %d ids after the run; want the union, %d", len(b.envs), len(u))
	}
	return r
}
