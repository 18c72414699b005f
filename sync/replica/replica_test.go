package replica

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/catchup"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// team is a small team for unit tests: replicas of one team on a shared
// virtual clock, the first one the creator, all members.
type team struct {
	id   crdt.TeamID
	key  seal.EpochKey
	now  time.Time
	reps []*Replica
}

func newTeam(t *testing.T, n int) *team {
	t.Helper()
	keys := rand.NewChaCha8([32]byte{7})
	tm := &team{now: time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC)}
	tm.id, _ = crdt.NewTeamID(keys)
	tm.key, _ = seal.NewEpochKey(keys)
	for range n {
		dev, err := identity.Generate(keys)
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(Config{Device: dev, Team: tm.id, Epoch: 3, Key: tm.key, Now: func() time.Time { return tm.now }})
		if err != nil {
			t.Fatal(err)
		}
		tm.reps = append(tm.reps, r)
	}
	c := tm.reps[0]
	if _, err := c.Create("Ward 7", crdt.Clinical, "r0"); err != nil {
		t.Fatal(err)
	}
	for i, r := range tm.reps[1:] {
		tm.tick()
		if _, err := c.AddMember(r.Info(string(rune('a'+i)), false)); err != nil {
			t.Fatal(err)
		}
	}
	return tm
}

func (tm *team) tick() { tm.now = tm.now.Add(time.Second) }

// syncAll reconciles every replica with the first, twice round.
func (tm *team) syncAll(t *testing.T, p Protocol) {
	t.Helper()
	for range 2 {
		for _, r := range tm.reps[1:] {
			if _, err := Reconcile(r, tm.reps[0], Options{Protocol: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestNewConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("New without a device: got %v; want ErrConfig", err)
	}
	dev, _ := identity.Generate(rand.NewChaCha8([32]byte{1}))
	r, err := New(Config{Device: dev}) // the zero value of the rest works
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Send(crdt.Message{Text: "hi"}); err != nil {
		t.Errorf("Send with the system clock: %v", err)
	}
	if got := r.Device(); got != dev.ID() {
		t.Errorf("Device: got %v; want %v", got, dev.ID())
	}
}

func TestPublishAccept(t *testing.T) {
	tm := newTeam(t, 3)
	a, b, c := tm.reps[0], tm.reps[1], tm.reps[2]
	tm.tick()
	op, err := a.Send(crdt.Message{Text: "Bed 4 needs a review", Priority: crdt.Urgent})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Has(op.ID()) || a.Len() != 4 {
		t.Fatalf("after Send: Has %v, Len %d; want true, 4", a.Has(op.ID()), a.Len())
	}
	// b gets everything by hand, in reverse order, twice.
	items, _ := a.Items()
	if !slices.IsSortedFunc(items, compareItems) {
		t.Errorf("Items not sorted by (Time, ID)")
	}
	for range 2 {
		for i := len(items) - 1; i >= 0; i-- {
			env, err := a.Envelope(items[i].ID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Accept(env); err != nil {
				t.Fatalf("Accept: %v", err)
			}
		}
	}
	if got, want := b.State(), a.State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("b's state differs from a's:\n%+v\n%+v", got, want)
	}
	if added, err := b.Accept(mustEnvelope(t, a, op.ID())); added || err != nil {
		t.Errorf("Accept of a stored envelope: got %v, %v; want false, nil", added, err)
	}
	if _, err := b.Envelope([32]byte{9}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Envelope(unknown): got %v; want ErrNotFound", err)
	}
	// A reply from b, then acks batched by c.
	tm.tick()
	id := op.ID()
	reply, err := b.Send(crdt.Message{Text: "On it", ReplyTo: &id})
	if err != nil {
		t.Fatal(err)
	}
	tm.syncAll(t, Catchup)
	acks, err := c.Ack(true)
	if err != nil || len(acks) != 1 {
		t.Fatalf("Ack: got %d ops, %v; want 1 op", len(acks), err)
	}
	if again, err := c.Ack(true); err != nil || len(again) != 0 {
		t.Errorf("second Ack: got %d ops, %v; want none (nothing new)", len(again), err)
	}
	tm.syncAll(t, Catchup)
	s := a.State()
	if len(s.Messages) != 2 || s.Messages[1].ID != reply.ID() {
		t.Fatalf("messages: got %d; want 2, the reply last", len(s.Messages))
	}
	for _, m := range s.Messages {
		if !slices.Contains(m.ReadBy, c.Device()) || !slices.Contains(m.ReceivedBy, c.Device()) {
			t.Errorf("%q: ReadBy %v; want c", m.Text, m.ReadBy)
		}
	}
}

func mustEnvelope(t *testing.T, r *Replica, id crdt.OpID) []byte {
	t.Helper()
	env, err := r.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestAcceptRejects feeds Accept every kind of bad envelope: each is refused
// with ErrRejected and leaves the replica unchanged.
func TestAcceptRejects(t *testing.T) {
	tm := newTeam(t, 2)
	a, b := tm.reps[0], tm.reps[1]
	tm.syncAll(t, Catchup)
	tm.tick()
	good, err := a.Send(crdt.Message{Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	goodEnv := mustEnvelope(t, a, good.ID())
	sealed := func(op *crdt.Op, epoch uint32, key seal.EpochKey) []byte {
		// a's own chain when the key is the team's (a fresh chain would reuse an index a used)
		return sealGarbage(t, a, op, epoch, key).Marshal()
	}
	dev := a.dev
	heads := a.log.Heads()
	at := crdt.MakeHLC(tm.now.Add(time.Minute), 0)
	otherKey, _ := seal.NewEpochKey(rand.NewChaCha8([32]byte{99}))
	otherTeam := crdt.TeamID{1}

	badSig := crdt.NewOp(dev, tm.id, at, heads, crdt.KindMessage, crdt.Message{Text: "y"}.Marshal())
	badSig.Sig[5] ^= 1
	tampered := bytes.Clone(goodEnv)
	tampered[len(tampered)-3] ^= 1
	reheaded := bytes.Clone(goodEnv)
	reheaded[30] ^= 1 // inside the id: the AEAD's associated data

	tests := []struct {
		name string
		env  []byte
		want error
	}{
		{"empty", nil, envelope.ErrShort},
		{"random", bytes.Repeat([]byte{0x5a}, 100), envelope.ErrVersion},
		{"oversize", make([]byte, envelope.MaxSize+1), envelope.ErrTooLarge},
		{"tampered ciphertext", tampered, envelope.ErrOpen},
		{"tampered header", reheaded, envelope.ErrOpen},
		{"other epoch", sealed(crdt.NewOp(dev, tm.id, at, heads, crdt.KindMessage, nil), 4, tm.key), ErrRejected},
		{"other key", sealed(crdt.NewOp(dev, tm.id, at, heads, crdt.KindMessage, crdt.Message{}.Marshal()), 3, otherKey), envelope.ErrOpen},
		{"other team", sealed(crdt.NewOp(dev, otherTeam, at, heads, crdt.KindMessage, crdt.Message{}.Marshal()), 3, tm.key), ErrRejected},
		{"bad signature", sealed(badSig, 3, tm.key), crdt.ErrBadSignature},
		{"bad body", sealed(crdt.NewOp(dev, tm.id, at, heads, crdt.KindAck, []byte{1, 0, 0}), 3, tm.key), crdt.ErrBadBody},
	}
	for _, tt := range tests {
		before, beforeLen := b.State(), b.Len()
		added, err := b.Accept(tt.env)
		if added || !errors.Is(err, ErrRejected) || !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, %v; want false, ErrRejected and %v", tt.name, added, err, tt.want)
		}
		if !reflect.DeepEqual(b.State(), before) || b.Len() != beforeLen {
			t.Errorf("%s: the replica changed", tt.name)
		}
	}
	// An op with an impossible parent is a valid envelope: stored, not shown.
	before := b.State()
	imp := crdt.NewOp(dev, tm.id, 1, b.log.Heads(), crdt.KindMessage, crdt.Message{Text: "before its parents"}.Marshal())
	if added, err := b.Accept(sealed(imp, 3, tm.key)); !added || err != nil {
		t.Fatalf("impossible-parent op: got %v, %v; want true, nil", added, err)
	}
	if !reflect.DeepEqual(b.State(), before) {
		t.Errorf("an impossible-parent op changed the state")
	}
}

// TestRestart checks that a restart rebuilds the same state from the store
// and keeps the clock monotonic even when the wall clock reads 1970.
func TestRestart(t *testing.T) {
	tm := newTeam(t, 3)
	tm.syncAll(t, Catchup)
	for i, r := range tm.reps {
		tm.tick()
		if _, err := r.Send(crdt.Message{Text: string(rune('A' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	tm.syncAll(t, Catchup)
	b := tm.reps[1]
	before, last := b.State(), b.Clock()
	dead := tm.now
	b.now = func() time.Time { return time.Unix(0, 0).Add(tm.now.Sub(dead)) } // the battery died
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := b.State(); !reflect.DeepEqual(got, before) {
		t.Errorf("state after restart differs")
	}
	tm.tick()
	op, err := b.Send(crdt.Message{Text: "after the restart"})
	if err != nil {
		t.Fatal(err)
	}
	if op.Time <= last {
		t.Errorf("op after a restart in 1970: time %v; want after %v", op.Time.Time().UTC(), last.Time().UTC())
	}
	s := b.State()
	if got := s.Messages[len(s.Messages)-1].Text; got != "after the restart" {
		t.Errorf("last message: got %q; want the new one", got)
	}
}

func TestReconcileProtocols(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.Name, func(t *testing.T) {
			tm := newTeam(t, 4)
			tm.syncAll(t, p)
			for i, r := range tm.reps {
				for range 3 {
					tm.tick()
					if _, err := r.Send(crdt.Message{Text: string(rune('A' + i))}); err != nil {
						t.Fatal(err)
					}
				}
			}
			// With faults, until nothing is missing.
			rng := rand.New(rand.NewPCG(1, 2))
			f := Faults{Rand: rng, Drop: 0.3, Duplicate: 0.3, Reorder: true}
			var dropped, dup int
			for round := 0; ; round++ {
				if round > 50 {
					t.Fatalf("no convergence after 50 rounds")
				}
				for _, r := range tm.reps[1:] {
					res, err := Reconcile(r, tm.reps[0], Options{Protocol: p, Faults: f, MaxFrame: 4096})
					if err != nil {
						t.Fatal(err)
					}
					dropped += res.Initiator.Dropped + res.Responder.Dropped
					dup += res.Initiator.Duplicated + res.Responder.Duplicated
				}
				if same(tm.reps) {
					break
				}
			}
			if dropped == 0 || dup == 0 {
				t.Errorf("faults not injected: %d dropped, %d duplicated", dropped, dup)
			}
			if got := len(tm.reps[0].State().Messages); got != 12 {
				t.Errorf("messages: got %d; want 12", got)
			}
		})
	}
}

func same(reps []*Replica) bool {
	want, _ := reps[0].Items()
	for _, r := range reps[1:] {
		if got, _ := r.Items(); !reflect.DeepEqual(got, want) {
			return false
		}
	}
	return true
}

// TestReconcileErrors checks the failure paths: a peer whose frames are
// garbage, a peer that sends a bad envelope, and sessions that never end.
func TestReconcileErrors(t *testing.T) {
	tm := newTeam(t, 2)
	a, b := tm.reps[0], tm.reps[1]

	// Garbage frames from the responder: the initiator's session fails.
	before := b.State()
	_, err := Reconcile(b, a, Options{Protocol: mangledAlways(Catchup)})
	if err == nil || !errors.Is(err, catchup.ErrVersion) {
		t.Errorf("mangled frames: got %v; want catchup.ErrVersion", err)
	}
	if !reflect.DeepEqual(b.State(), before) {
		t.Errorf("mangled frames changed the state")
	}

	// A bad envelope in a's store: b rejects it and drops a.
	var id [32]byte
	id[0] = 0xee
	a.store[id] = stored{time: 1, raw: []byte("not an envelope")}
	a.items = nil
	if _, err := Reconcile(b, a, Options{}); !errors.Is(err, ErrRejected) {
		t.Errorf("bad envelope: got %v; want ErrRejected", err)
	}
	if b.Has(id) {
		t.Errorf("bad envelope stored")
	}

	// Sessions that never finish.
	if _, err := Reconcile(a, b, Options{Protocol: chatty, MaxFrames: 100}); !errors.Is(err, ErrStalled) {
		t.Errorf("endless sessions: got %v; want ErrStalled", err)
	}
	if _, err := Reconcile(a, b, Options{Protocol: mute}); !errors.Is(err, ErrStalled) {
		t.Errorf("sessions that stop early: got %v; want ErrStalled", err)
	}
}

// mangledAlways corrupts the version byte of every frame the responder
// sends.
func mangledAlways(p Protocol) Protocol {
	q := p
	q.NewResponder = func(src Source, maxFrame int) Session {
		return versionFlipper{p.NewResponder(src, maxFrame)}
	}
	return q
}

type versionFlipper struct{ Session }

func (v versionFlipper) Handle(f []byte) ([][]byte, [][]byte, bool, error) {
	out, recv, done, err := v.Session.Handle(f)
	for i := range out {
		out[i] = append([]byte{out[i][0] ^ 0xff}, out[i][1:]...)
	}
	return out, recv, done, err
}

// chatty sessions answer every frame with a frame, forever; mute sessions
// send one frame and stop without being done.
var (
	chatty = Protocol{Name: "chatty",
		NewInitiator: func(Source, int) Session { return &scripted{first: []byte{1}, reply: true} },
		NewResponder: func(Source, int) Session { return &scripted{reply: true} },
	}
	mute = Protocol{Name: "mute",
		NewInitiator: func(Source, int) Session { return &scripted{first: []byte{1}} },
		NewResponder: func(Source, int) Session { return &scripted{} },
	}
)

type scripted struct {
	first []byte
	reply bool
}

func (s *scripted) Start() ([]byte, error) { return s.first, nil }
func (s *scripted) Handle([]byte) ([][]byte, [][]byte, bool, error) {
	if s.reply {
		return [][]byte{{2}}, nil, false, nil
	}
	return nil, nil, false, nil
}

// sealGarbage seals op, made by r's device, as r would (commit form for
// create and commit ops, chain form otherwise), under key and epoch: with
// r's own sender chain when key is r's, with a fresh chain otherwise.
func sealGarbage(t testing.TB, r *Replica, op *crdt.Op, epoch uint32, key seal.EpochKey) *envelope.Envelope {
	t.Helper()
	e, err := sealAs(r, op, epoch, key)
	if err != nil {
		t.Fatalf("seal garbage: %v", err)
	}
	return e
}

func sealAs(r *Replica, op *crdt.Op, epoch uint32, key seal.EpochKey) (*envelope.Envelope, error) {
	switch {
	case op.Kind == crdt.KindCreate || op.Kind == crdt.KindMember:
		return envelope.SealCommit(op, r.dev, key, []identity.NoisePublic{r.dev.NoisePublic()}, nil, nil)
	case key.Equal(r.key):
		return envelope.SealChain(op, epoch, envelope.OuterKey(key), r.sender)
	default:
		return envelope.SealChain(op, epoch, envelope.OuterKey(key), senderkey.NewSender(key, r.dev.ID()))
	}
}
