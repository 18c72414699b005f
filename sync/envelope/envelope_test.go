package envelope

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func detRand(seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

func mustDevice(t testing.TB, seed uint64) *identity.Device {
	t.Helper()
	d, err := identity.Generate(detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustKey(t testing.TB, seed uint64) seal.EpochKey {
	t.Helper()
	k, err := seal.NewEpochKey(detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixture is a deterministic team: alice (admin) creates it, then commits
// an epoch adding bob, with carol's device linked to bob; alice and bob
// send messages under that epoch.
type fixture struct {
	team               crdt.TeamID
	alice, bob, carol  *identity.Device
	outsider           *identity.Device
	create, commit     *crdt.Op
	msgA, msgB         *crdt.Op
	k1, k2             seal.EpochKey // epoch keys of the create and the commit
	recipients         []crdt.Recipient
	createEnv, commitE *Envelope
}

var at = time.Date(2025, 3, 1, 8, 30, 0, 0, time.UTC)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{
		alice:    mustDevice(t, 0xa1),
		bob:      mustDevice(t, 0xb0),
		carol:    mustDevice(t, 0xca),
		outsider: mustDevice(t, 0x0f),
		k1:       mustKey(t, 0x11),
		k2:       mustKey(t, 0x12),
	}
	var err error
	if f.team, err = crdt.NewTeamID(detRand(0x7e)); err != nil {
		t.Fatal(err)
	}
	info := func(d *identity.Device, name string, admin bool) crdt.MemberInfo {
		return crdt.MemberInfo{Device: d.ID(), Noise: d.NoisePublic(), Name: name, Admin: admin}
	}
	create := crdt.Create{Name: "Ward 7", Kind: crdt.Clinical, Creator: info(f.alice, "Alice", true)}
	f.create = crdt.NewOp(f.alice, f.team, crdt.MakeHLC(at, 0), nil, crdt.KindCreate, create.Marshal())
	for _, d := range []*identity.Device{f.alice, f.bob, f.carol} {
		f.recipients = append(f.recipients, crdt.Recipient{Device: d.ID(), Noise: d.NoisePublic()})
	}
	slices.SortFunc(f.recipients, func(a, b crdt.Recipient) int { return bytes.Compare(a.Device[:], b.Device[:]) })
	commit := crdt.Commit{Number: 2, Changes: []crdt.Change{
		{Action: crdt.ActAdd, Info: info(f.bob, "Bob", false)},
		{Action: crdt.ActLink, Info: info(f.carol, "Bob", false), Target: f.bob.ID()},
	}, Recipients: f.recipients}
	if err := commit.Validate(); err != nil {
		t.Fatal(err)
	}
	f.commit = crdt.NewOp(f.alice, f.team, crdt.MakeHLC(at.Add(time.Second), 0), []crdt.OpID{f.create.ID()}, crdt.KindMember, commit.Marshal())
	f.msgA = crdt.NewOp(f.alice, f.team, crdt.MakeHLC(at.Add(2*time.Second), 0), []crdt.OpID{f.commit.ID()}, crdt.KindMessage,
		crdt.Message{Text: "Bed 4: review before noon", Priority: crdt.Urgent, Patient: "MRN 0042"}.Marshal())
	f.msgB = crdt.NewOp(f.bob, f.team, crdt.MakeHLC(at.Add(3*time.Second), 0), []crdt.OpID{f.msgA.ID()}, crdt.KindMessage,
		crdt.Message{Text: "On it"}.Marshal())
	f.createEnv = f.sealCommit(t, f.create, f.k1, []identity.NoisePublic{f.alice.NoisePublic()}, nil, 1)
	f.commitE = f.sealCommit(t, f.commit, f.k2, f.noise(), []PriorKey{{Tag: crdt.TagOf(f.create.ID()), Outer: OuterKey(f.k1)}}, 2)
	return f
}

func (f *fixture) noise() []identity.NoisePublic {
	var out []identity.NoisePublic
	for _, r := range f.recipients {
		out = append(out, r.Noise)
	}
	return out
}

func (f *fixture) tag2() uint32 { return crdt.TagOf(f.commit.ID()) }

func (f *fixture) sealCommit(t testing.TB, op *crdt.Op, k seal.EpochKey, to []identity.NoisePublic, prior []PriorKey, seed uint64) *Envelope {
	t.Helper()
	e, err := SealCommit(op, f.alice, k, to, prior, detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// sealChain seals op by dev in chain form under epoch 2, with a fresh
// sender chain advanced to index.
func (f *fixture) sealChain(t testing.TB, op *crdt.Op, index int) *Envelope {
	t.Helper()
	s := senderkey.NewSender(f.k2, op.Author)
	for range index {
		if _, _, err := s.Seal(nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	e, err := SealChain(op, f.tag2(), OuterKey(f.k2), s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Next() != uint32(index+1) {
		t.Fatalf("SealChain: sender chain at %d; want %d", s.Next(), index+1)
	}
	return e
}

// openChain opens a chain-form envelope of epoch 2 with a fresh receiver
// state of its sender.
func (f *fixture) openChain(e *Envelope) (*crdt.Op, error) {
	c, err := OpenChain(e, OuterKey(f.k2), f.team)
	if err != nil {
		return nil, err
	}
	return c.Open(senderkey.NewReceiver(f.k2, c.Sender))
}

// openCommit opens a commit-form envelope as dev.
func (f *fixture) openCommit(e *Envelope, dev *identity.Device) (*crdt.Op, []PriorKey, seal.EpochKey, error) {
	k, err := OpenBox(e, dev, f.team)
	if err != nil {
		return nil, nil, seal.EpochKey{}, err
	}
	op, prior, err := OpenCommit(e, OuterKey(k), f.team)
	return op, prior, k, err
}

// secrets are strings that must never appear on the wire.
func (f *fixture) secrets() map[string][]byte {
	s := map[string][]byte{
		"team id": f.team[:], "team name": []byte("Ward 7"), "member name": []byte("Alice"), "bob's name": []byte("Bob"),
		"text": []byte("Bed 4"), "patient": []byte("MRN"), "alice's id": f.alice.ID().PublicKey(),
		"bob's id": f.bob.ID().PublicKey(), "k1": f.k1.Bytes(), "k2": f.k2.Bytes(), "outer key 1": OuterKey(f.k1).Bytes(),
	}
	for _, r := range f.recipients {
		s["recipient noise key "+r.Device.Short()] = r.Noise[:]
	}
	return s
}

func (f *fixture) checkNoSecrets(t *testing.T, what string, b []byte) {
	t.Helper()
	for name, s := range f.secrets() {
		if bytes.Contains(b, s) {
			t.Errorf("%s: the wire bytes contain the %s", what, name)
		}
	}
}

func TestChainRoundtrip(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	for i, op := range []*crdt.Op{f.msgA, f.msgB} {
		e := f.sealChain(t, op, 5*i)
		if e.Topic != TopicOf(f.team) || e.ID != op.ID() || e.Time != op.Time || e.Epoch != f.tag2() || e.Form() != FormChain || e.Boxes() != 0 {
			t.Errorf("op %d: header %v %v %v %08x form %v; want the op's, epoch %08x, chain form", i, e.Topic, e.ID.Short(), e.Time, e.Epoch, e.Form(), f.tag2())
		}
		b := e.Marshal()
		if got, want := len(b), HeaderSize+ChainOverhead+len(op.Marshal()); got != want || e.Size() != want {
			t.Errorf("op %d: %d bytes (Size %d); want %d", i, got, e.Size(), want)
		}
		f.checkNoSecrets(t, fmt.Sprintf("op %d", i), b)
		e2, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("op %d: Unmarshal: %v", i, err)
		}
		if !reflect.DeepEqual(e2, e) {
			t.Errorf("op %d: Unmarshal got %+v; want %+v", i, e2, e)
		}
		c, err := OpenChain(e2, OuterKey(f.k2), f.team)
		if err != nil {
			t.Fatalf("op %d: OpenChain: %v", i, err)
		}
		if c.Sender != op.Author || c.Index != uint32(5*i) {
			t.Errorf("op %d: sender %v index %d; want %v %d", i, c.Sender.Short(), c.Index, op.Author.Short(), 5*i)
		}
		r := senderkey.NewReceiver(f.k2, c.Sender)
		got, err := c.Open(r)
		if err != nil || !reflect.DeepEqual(got, op) {
			t.Fatalf("op %d: Open: got %v, %v; want the op", i, got, err)
		}
		// Replayed: refused, the receiver unchanged.
		before, _ := r.MarshalBinary()
		if got, err := c.Open(r); !errors.Is(err, senderkey.ErrReplay) || got != nil {
			t.Errorf("op %d: replay: got %v, %v; want nil, ErrReplay", i, got, err)
		}
		if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
			t.Errorf("op %d: a refused replay changed the receiver state", i)
		}
	}
	// Topic as hex and short.
	tp := TopicOf(f.team)
	if got, want := tp.String(), fmt.Sprintf("%x", tp[:]); got != want || tp.Short() != want[:8] || tp.LogValue().String() != want[:8] {
		t.Errorf("Topic strings: got %q %q; want %q", got, tp.Short(), want)
	}
}

func TestCommitRoundtrip(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	e := f.commitE
	if e.Epoch != f.tag2() || e.Form() != FormCommit || e.Boxes() != 3 {
		t.Errorf("header: epoch %08x form %v boxes %d; want %08x commit 3", e.Epoch, e.Form(), e.Boxes(), f.tag2())
	}
	b := e.Marshal()
	if got, want := len(b), HeaderSize+1+1+3*BoxSize+sigSize+1+priorSize+len(f.commit.Marshal())+seal.Overhead; got != want {
		t.Errorf("size: got %d; want %d", got, want)
	}
	f.checkNoSecrets(t, "commit", b)
	e2, err := Unmarshal(b)
	if err != nil || !reflect.DeepEqual(e2, e) {
		t.Fatalf("Unmarshal: got %v; want the envelope", err)
	}
	for _, d := range []*identity.Device{f.alice, f.bob, f.carol} {
		op, prior, k, err := f.openCommit(e2, d)
		if err != nil {
			t.Fatalf("%v: %v", d.ID().Short(), err)
		}
		if !k.Equal(f.k2) || !reflect.DeepEqual(op, f.commit) {
			t.Errorf("%v: got another key or op", d.ID().Short())
		}
		if len(prior) != 1 || prior[0].Tag != crdt.TagOf(f.create.ID()) || !prior[0].Outer.Equal(OuterKey(f.k1)) {
			t.Errorf("%v: prior keys %v; want the create's outer key", d.ID().Short(), prior)
		}
	}
	if _, err := OpenBox(e2, f.outsider, f.team); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("outsider: got %v; want ErrNotRecipient", err)
	}
	// The genesis: one box, no prior keys.
	op, prior, k, err := f.openCommit(f.createEnv, f.alice)
	if err != nil || !k.Equal(f.k1) || prior != nil || !reflect.DeepEqual(op, f.create) {
		t.Errorf("create: got %v, %v; want the create op, no prior keys", prior, err)
	}
	if _, err := OpenBox(f.createEnv, f.bob, f.team); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("create, bob: got %v; want ErrNotRecipient", err)
	}
	// Whoever holds the outer key (from prior keys) opens it without a box.
	if op, _, err := OpenCommit(f.createEnv, OuterKey(f.k1), f.team); err != nil || op.ID() != f.create.ID() {
		t.Errorf("create with the outer key: got %v", err)
	}
}

func TestOuterKey(t *testing.T) {
	f := newFixture(t)
	if OuterKey(f.k1).Equal(f.k1) || OuterKey(f.k1).Equal(OuterKey(f.k2)) || !OuterKey(f.k1).Equal(OuterKey(f.k1)) {
		t.Errorf("OuterKey: want deterministic, distinct from K and per K")
	}
	// Known answer: HKDF-SHA256(K = 0..31, salt "fieldmesh/v1/outer", info ""), independently computed.
	k, _ := seal.EpochKeyFromBytes(seq(32))
	if got, want := fmt.Sprintf("%x", OuterKey(k).Bytes()), outerKAT; got != want {
		t.Errorf("OuterKey(0..31): got %s; want %s", got, want)
	}
}

// outerKAT = python3 -c 'import hmac,hashlib;prk=hmac.new(b"fieldmesh/v1/outer",bytes(range(32)),hashlib.sha256).digest();print(hmac.new(prk,b"\x01",hashlib.sha256).hexdigest())'
const outerKAT = "a061245dce2e3dffd5655d619cedc80a742d7aad8e92296f3398fc3a8861d3ce"

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// TestTamperEveryByte changes each byte of an envelope of each form in
// turn (three ways), truncates and extends it, and checks that every result
// is refused.
func TestTamperEveryByte(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	for _, tt := range []struct {
		name string
		e    *Envelope
		open func(*Envelope) error
	}{
		{"chain", f.sealChain(t, f.msgA, 0), func(e *Envelope) error { _, err := f.openChain(e); return err }},
		{"commit", f.commitE, func(e *Envelope) error { _, _, _, err := f.openCommit(e, f.bob); return err }},
	} {
		b := tt.e.Marshal()
		try := func(c []byte) error {
			e, err := Unmarshal(c)
			if err != nil {
				return err
			}
			return tt.open(e)
		}
		if err := try(b); err != nil {
			t.Fatalf("%s: untouched: got %v; want nil", tt.name, err)
		}
		for i := range b {
			for _, x := range []byte{0x01, 0x80, 0xff} {
				c := bytes.Clone(b)
				c[i] ^= x
				if err := try(c); err == nil {
					t.Fatalf("%s: byte %d ^ %#x: got nil error; want an error", tt.name, i, x)
				}
			}
		}
		for n := range len(b) {
			if err := try(b[:n]); err == nil {
				t.Fatalf("%s: truncated to %d bytes: got nil error; want an error", tt.name, n)
			}
		}
		if err := try(append(bytes.Clone(b), 0)); err == nil {
			t.Fatalf("%s: extended: got nil error; want an error", tt.name)
		}
	}
}

// TestMoved moves boxes, outer and inner ciphertexts between envelopes,
// epochs, teams and topics, and checks that none opens.
func TestMoved(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	otherTeam, _ := crdt.NewTeamID(detRand(0x7f))
	// A second commit of the same team, same recipients (another epoch).
	commit3 := crdt.Commit{Number: 3, Recipients: f.recipients}
	op3 := crdt.NewOp(f.alice, f.team, crdt.MakeHLC(at.Add(time.Minute), 0), []crdt.OpID{f.commit.ID()}, crdt.KindMember, commit3.Marshal())
	k3 := mustKey(t, 0x13)
	e3 := f.sealCommit(t, op3, k3, f.noise(), nil, 3)
	// The same commit op re-sealed in another team's envelope layout (the op
	// itself belongs to f.team, so only the envelope differs).
	withCT := func(e *Envelope, ct []byte) *Envelope { c := *e; c.Ciphertext = ct; return &c }

	t.Run("box into another commit", func(t *testing.T) {
		// e3 with the boxes of the commit of epoch 2.
		_, end2 := f.commitE.boxes()
		_, end3 := e3.boxes()
		ct := append(bytes.Clone(f.commitE.Ciphertext[:end2]), e3.Ciphertext[end3:]...)
		if _, err := OpenBox(withCT(e3, ct), f.bob, f.team); !errors.Is(err, ErrNotRecipient) {
			t.Errorf("got %v; want ErrNotRecipient", err)
		}
	})
	t.Run("box under another epoch tag or time", func(t *testing.T) {
		for _, mut := range []func(*Envelope){
			func(e *Envelope) { e.Epoch ^= 1 },
			func(e *Envelope) { e.Time++ },
			func(e *Envelope) { e.ID[31] ^= 1 },
		} {
			c := *f.commitE
			mut(&c)
			if _, err := OpenBox(&c, f.bob, f.team); err == nil {
				t.Errorf("got nil; want an error")
			}
		}
	})
	t.Run("box into another team or topic", func(t *testing.T) {
		c := *f.commitE
		c.Topic = TopicOf(otherTeam)
		if _, err := OpenBox(&c, f.bob, otherTeam); !errors.Is(err, ErrNotRecipient) {
			t.Errorf("other team, its topic: got %v; want ErrNotRecipient", err)
		}
		if _, err := OpenBox(f.commitE, f.bob, otherTeam); !errors.Is(err, ErrWrongTopic) {
			t.Errorf("other team, this topic: got %v; want ErrWrongTopic", err)
		}
		// The boxes under the prologue of another team but this topic do not open.
		boxes, _ := f.commitE.boxes()
		if _, _, _, err := openAnyWith(f.bob, BoxPrologue(otherTeam, f.commitE), boxes); err == nil {
			t.Errorf("prologue of another team: a box opened")
		}
	})
	t.Run("commit outer layer into another commit", func(t *testing.T) {
		_, end2 := f.commitE.boxes()
		_, end3 := e3.boxes()
		ct := append(bytes.Clone(e3.Ciphertext[:end3]), f.commitE.Ciphertext[end2:]...)
		if _, _, err := OpenCommit(withCT(e3, ct), OuterKey(f.k2), f.team); !errors.Is(err, ErrOpen) {
			t.Errorf("got %v; want ErrOpen", err)
		}
	})
	chainA := f.sealChain(t, f.msgA, 0)
	chainB := f.sealChain(t, f.msgB, 0)
	t.Run("chain outer layer into another envelope", func(t *testing.T) {
		if _, err := OpenChain(withCT(chainB, chainA.Ciphertext), OuterKey(f.k2), f.team); !errors.Is(err, ErrOpen) {
			t.Errorf("got %v; want ErrOpen", err)
		}
	})
	t.Run("chain envelope into another epoch", func(t *testing.T) {
		c := *chainA
		c.Epoch = crdt.TagOf(f.create.ID())
		if _, err := OpenChain(&c, OuterKey(f.k1), f.team); !errors.Is(err, ErrOpen) {
			t.Errorf("other epoch's key: got %v; want ErrOpen", err)
		}
		if _, err := OpenChain(&c, OuterKey(f.k2), f.team); !errors.Is(err, ErrOpen) {
			t.Errorf("tag changed, right key: got %v; want ErrOpen", err)
		}
	})
	t.Run("chain envelope into another team or topic", func(t *testing.T) {
		c := *chainA
		c.Topic = TopicOf(otherTeam)
		if _, err := OpenChain(&c, OuterKey(f.k2), otherTeam); !errors.Is(err, ErrOpen) {
			t.Errorf("other topic: got %v; want ErrOpen", err)
		}
		if _, err := OpenChain(chainA, OuterKey(f.k2), otherTeam); !errors.Is(err, ErrWrongTopic) {
			t.Errorf("other team: got %v; want ErrWrongTopic", err)
		}
	})
	t.Run("inner layer into another envelope", func(t *testing.T) {
		// A member holding the outer key re-wraps A's inner layer in B's
		// header (same sender and index): the inner layer does not open.
		ca, err := OpenChain(chainA, OuterKey(f.k2), f.team)
		if err != nil {
			t.Fatal(err)
		}
		forged := rewrap(t, chainB, OuterKey(f.k2), ca.Sender, ca.Index, ca.inner)
		cf, err := OpenChain(forged, OuterKey(f.k2), f.team)
		if err != nil {
			t.Fatalf("the re-wrapped outer layer: %v", err)
		}
		r := senderkey.NewReceiver(f.k2, ca.Sender)
		if _, err := cf.Open(r); !errors.Is(err, ErrOpen) || r.Next() != 0 {
			t.Errorf("got %v (receiver at %d); want ErrOpen, receiver unchanged", err, r.Next())
		}
		// And the genuine one still opens with that receiver.
		if _, err := ca.Open(r); err != nil {
			t.Errorf("genuine after the forgery: got %v; want nil", err)
		}
	})
}

// rewrap builds a chain-form envelope with e's header around the given
// sender, index and inner layer, sealed under outer: what a member holding
// the outer key can do.
func rewrap(t *testing.T, e *Envelope, outer seal.EpochKey, sender identity.DeviceID, index uint32, inner []byte) *Envelope {
	t.Helper()
	body, mac := inner[:len(inner)-macSize], inner[len(inner)-macSize:]
	ad := append(e.appendHeader(nil), byte(FormChain))
	ad = append(ad, mac...)
	plain := append(append(bytes.Clone(sender[:]), byte(index>>24), byte(index>>16), byte(index>>8), byte(index)), body...)
	c := *e
	c.Ciphertext = append(append([]byte{byte(FormChain)}, mac...), outerSeal(outer, [seal.NonceSize]byte(mac), ad, plain)...)
	return &c
}

func TestUnmarshalErrors(t *testing.T) {
	f := newFixture(t)
	chain := f.sealChain(t, f.msgA, 0).Marshal()
	commit := f.commitE.Marshal()
	with := func(b []byte, i int, v ...byte) []byte { c := bytes.Clone(b); copy(c[i:], v); return c }
	boxCount := func(v ...byte) []byte {
		c := append(bytes.Clone(commit[:HeaderSize+1]), v...)
		return append(c, commit[HeaderSize+2:]...)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only", chain[:HeaderSize], ErrShort},
		{"too large", make([]byte, MaxSize+1), ErrTooLarge},
		{"version 0", with(chain, 0, 0), ErrVersion},
		{"version 1", with(chain, 0, 1), ErrVersion},
		{"version 3", with(chain, 0, 3), ErrVersion},
		{"form 0", with(chain, HeaderSize, 0), ErrMalformed},
		{"form 3", with(chain, HeaderSize, 3), ErrMalformed},
		{"chain too short", chain[:minChain-1], ErrShort},
		{"commit under another tag", with(commit, 17, commit[17]^1), ErrMalformed},
		{"chain form under the commit's own tag", with(chain, 17, chain[21:25]...), nil},
		{"commit with 0 boxes", boxCount(0), ErrMalformed},
		{"commit count not minimal", boxCount(0x83, 0x00), ErrMalformed},
		{"commit count 257", boxCount(0x81, 0x02), ErrMalformed},
		{"commit count truncated", boxCount(0x80), ErrMalformed},
		{"commit count over what follows", boxCount(40), ErrShort},
		{"commit without its tail", commit[:HeaderSize+2+3*BoxSize+minCommitTail-1], ErrShort},
	}
	for _, tt := range tests {
		e, err := Unmarshal(tt.in)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: got %v; want nil", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || e != nil {
			t.Errorf("%s: got %v, %v; want nil, %v", tt.name, e, err, tt.want)
		}
	}
	if _, err := Unmarshal(with(chain, 0, 1)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("version 1")) {
		t.Errorf("version 1: got %v; want an error that names version 1", err)
	}
	// The largest accepted size decodes (and fails to open).
	big := append(bytes.Clone(chain[:HeaderSize+1]), make([]byte, MaxSize-HeaderSize-1)...)
	e, err := Unmarshal(big)
	if err != nil {
		t.Fatalf("MaxSize: got %v; want nil", err)
	}
	if _, err := OpenChain(e, OuterKey(f.k2), f.team); !errors.Is(err, ErrOpen) {
		t.Errorf("MaxSize OpenChain: got %v; want ErrOpen", err)
	}
	// Unmarshal does not alias its input.
	b := bytes.Clone(chain)
	e, _ = Unmarshal(b)
	b[len(b)-1] ^= 1
	if _, err := f.openChain(e); err != nil {
		t.Errorf("after changing the input buffer: got %v; want nil", err)
	}
}

// hand builds envelopes with any content under a valid layout, as a member
// holding the keys could.
type hand struct {
	f   *fixture
	hdr Envelope
}

func (h hand) chain(t *testing.T, sender identity.DeviceID, pt []byte) *Envelope {
	t.Helper()
	e := h.hdr
	ad := append(e.appendHeader(nil), byte(FormChain))
	s := senderkey.NewSender(h.f.k2, sender)
	_, ct, err := s.Seal(ad, pt)
	if err != nil {
		t.Fatal(err)
	}
	return rewrap(t, &e, OuterKey(h.f.k2), sender, 0, ct)
}

// commit seals plain (sig ‖ prior ‖ op) under k with one box to bob.
func (h hand) commit(t *testing.T, k seal.EpochKey, plain func(ad []byte) []byte) *Envelope {
	t.Helper()
	e := h.hdr
	e.Epoch = crdt.TagOf(e.ID)
	boxes, err := sealToEachWith(h.f.alice, []identity.NoisePublic{h.f.bob.NoisePublic()}, BoxPrologue(h.f.team, &e), k.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	c := append([]byte{byte(FormCommit), 1}, boxes[0]...)
	ad := append(e.appendHeader(nil), c...)
	e.Ciphertext = append(c, outerSeal(OuterKey(k), nonceOf(e.ID), ad, plain(ad))...)
	return &e
}

func TestOpenErrors(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	other, _ := crdt.NewTeamID(detRand(99))
	otherTeamOp := crdt.NewOp(f.alice, other, f.msgA.Time, nil, crdt.KindMessage, f.msgA.Body)
	badSig := f.msgA.Clone()
	badSig.Sig[5] ^= 1
	hdrOf := func(op *crdt.Op) hand {
		return hand{f, Envelope{Topic: TopicOf(f.team), Epoch: f.tag2(), ID: op.ID(), Time: op.Time}}
	}
	good := f.sealChain(t, f.msgA, 0)
	chainCases := []struct {
		name string
		e    *Envelope
		want error
	}{
		{"good", good, nil},
		{"garbage plaintext", hdrOf(f.msgA).chain(t, f.alice.ID(), []byte("not an op")), crdt.ErrVersion},
		{"id of another op", hand{f, Envelope{Topic: good.Topic, Epoch: good.Epoch, ID: f.msgB.ID(), Time: f.msgA.Time}}.chain(t, f.alice.ID(), f.msgA.Marshal()), ErrBadOp},
		{"time differs", hand{f, Envelope{Topic: good.Topic, Epoch: good.Epoch, ID: f.msgA.ID(), Time: f.msgA.Time + 1}}.chain(t, f.alice.ID(), f.msgA.Marshal()), ErrBadOp},
		{"op of another team", hdrOf(otherTeamOp).chain(t, f.alice.ID(), otherTeamOp.Marshal()), ErrBadOp},
		{"bad signature", hdrOf(badSig).chain(t, f.alice.ID(), badSig.Marshal()), crdt.ErrBadSignature},
		{"in another sender's chain", hdrOf(f.msgA).chain(t, f.bob.ID(), f.msgA.Marshal()), ErrBadOp},
		{"a commit op in chain form", hdrOf(f.commit).chain(t, f.alice.ID(), f.commit.Marshal()), ErrBadOp},
	}
	for _, tt := range chainCases {
		c, err := OpenChain(tt.e, OuterKey(f.k2), f.team)
		if err != nil {
			t.Errorf("%s: OpenChain: %v", tt.name, err)
			continue
		}
		r := senderkey.NewReceiver(f.k2, c.Sender)
		got, err := c.Open(r)
		if tt.want == nil {
			if err != nil || got == nil {
				t.Errorf("%s: got %v, %v; want an op, nil", tt.name, got, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || got != nil {
			t.Errorf("%s: got %v, %v; want nil, %v", tt.name, got, err, tt.want)
		}
		if r.Next() != 0 || r.Skipped() != 0 {
			t.Errorf("%s: a refused message changed the receiver state", tt.name)
		}
	}
	// Wrong receiver state, wrong form, wrong topic, wrong key.
	c, _ := OpenChain(good, OuterKey(f.k2), f.team)
	if _, err := c.Open(senderkey.NewReceiver(f.k2, f.bob.ID())); !errors.Is(err, ErrOpen) {
		t.Errorf("receiver of another sender: got %v; want ErrOpen", err)
	}
	if _, err := c.Open(senderkey.NewReceiver(f.k1, f.alice.ID())); !errors.Is(err, ErrOpen) {
		t.Errorf("receiver of another epoch: got %v; want ErrOpen", err)
	}
	if _, err := OpenChain(f.commitE, OuterKey(f.k2), f.team); !errors.Is(err, ErrMalformed) {
		t.Errorf("OpenChain of a commit: got %v; want ErrMalformed", err)
	}
	if _, _, err := OpenCommit(good, OuterKey(f.k2), f.team); !errors.Is(err, ErrMalformed) {
		t.Errorf("OpenCommit of a chain: got %v; want ErrMalformed", err)
	}
	if _, err := OpenBox(good, f.bob, f.team); !errors.Is(err, ErrMalformed) {
		t.Errorf("OpenBox of a chain: got %v; want ErrMalformed", err)
	}
	if _, err := OpenChain(good, OuterKey(f.k1), f.team); !errors.Is(err, ErrOpen) {
		t.Errorf("wrong outer key: got %v; want ErrOpen", err)
	}
	if _, _, err := OpenCommit(f.commitE, OuterKey(f.k1), f.team); !errors.Is(err, ErrOpen) {
		t.Errorf("commit, wrong outer key: got %v; want ErrOpen", err)
	}
	if _, err := OpenChain(&Envelope{Ciphertext: make([]byte, MaxSize)}, OuterKey(f.k2), f.team); !errors.Is(err, ErrTooLarge) {
		t.Errorf("hand-built oversized envelope: got %v; want ErrTooLarge", err)
	}

	// Commit form built by hand: each must be refused by OpenCommit.
	priorOK := appendPrior(nil, []PriorKey{{Tag: 1, Outer: f.k1}})
	sign := func(d *identity.Device, ad, prior []byte) []byte { return d.Sign(commitSigned(f.team, ad, prior)) }
	plainOf := func(d *identity.Device, prior []byte, op *crdt.Op) func([]byte) []byte {
		return func(ad []byte) []byte {
			return append(append(sign(d, ad, prior), prior...), op.Marshal()...)
		}
	}
	commitHdr := hdrOf(f.commit)
	msgHdr := hdrOf(f.msgA)
	commitCases := []struct {
		name string
		e    *Envelope
		want error
	}{
		{"good", commitHdr.commit(t, f.k2, plainOf(f.alice, priorOK, f.commit)), nil},
		{"signed by another device", commitHdr.commit(t, f.k2, plainOf(f.bob, priorOK, f.commit)), ErrBadOp},
		{"prior keys changed after signing", commitHdr.commit(t, f.k2, func(ad []byte) []byte {
			return append(append(sign(f.alice, ad, priorOK), appendPrior(nil, []PriorKey{{Tag: 2, Outer: f.k1}})...), f.commit.Marshal()...)
		}), ErrBadOp},
		{"a message op in commit form", msgHdr.commit(t, f.k2, plainOf(f.alice, priorOK, f.msgA)), ErrBadOp},
		{"prior key of its own tag", commitHdr.commit(t, f.k2, plainOf(f.alice, appendPrior(nil, []PriorKey{{Tag: f.tag2(), Outer: f.k1}}), f.commit)), ErrBadOp},
		{"prior keys not ascending", commitHdr.commit(t, f.k2, plainOf(f.alice, appendPrior(nil, []PriorKey{{Tag: 5, Outer: f.k1}, {Tag: 5, Outer: f.k1}}), f.commit)), ErrBadOp},
		{"prior count over what follows", commitHdr.commit(t, f.k2, plainOf(f.alice, []byte{3}, f.commit)), ErrBadOp},
		{"prior count over the limit", commitHdr.commit(t, f.k2, plainOf(f.alice, []byte{0x81, 0x04}, f.commit)), ErrBadOp},
		{"prior count not minimal", commitHdr.commit(t, f.k2, plainOf(f.alice, []byte{0x80, 0x00}, f.commit)), ErrBadOp},
		{"op with a bad signature", hdrOf(badSig).commit(t, f.k2, plainOf(f.alice, priorOK, badSig)), crdt.ErrBadSignature},
		{"garbage op", commitHdr.commit(t, f.k2, func(ad []byte) []byte {
			return append(append(sign(f.alice, ad, priorOK), priorOK...), "garbage"...)
		}), ErrBadOp},
	}
	for _, tt := range commitCases {
		k, err := OpenBox(tt.e, f.bob, f.team)
		if err != nil || !k.Equal(f.k2) {
			t.Errorf("%s: OpenBox: %v", tt.name, err)
			continue
		}
		op, prior, err := OpenCommit(tt.e, OuterKey(k), f.team)
		if tt.want == nil {
			if err != nil || op == nil || len(prior) != 1 {
				t.Errorf("%s: got %v, %v, %v; want an op, one prior key, nil", tt.name, op, prior, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || op != nil || prior != nil {
			t.Errorf("%s: got %v, %v, %v; want nil, nil, %v", tt.name, op, prior, err, tt.want)
		}
	}
}

func TestSealErrors(t *testing.T) {
	f := newFixture(t)
	s := senderkey.NewSender(f.k2, f.alice.ID())
	if _, err := SealChain(f.msgB, f.tag2(), OuterKey(f.k2), s); !errors.Is(err, ErrSeal) || s.Next() != 0 {
		t.Errorf("another author's op: got %v (chain at %d); want ErrSeal, chain unchanged", err, s.Next())
	}
	if _, err := SealChain(f.commit, f.tag2(), OuterKey(f.k2), s); !errors.Is(err, ErrSeal) || s.Next() != 0 {
		t.Errorf("commit op in chain form: got %v; want ErrSeal", err)
	}
	huge := crdt.NewOp(f.alice, f.team, f.msgA.Time, nil, crdt.KindMessage, make([]byte, MaxSize))
	if _, err := SealChain(huge, f.tag2(), OuterKey(f.k2), s); !errors.Is(err, ErrTooLarge) || s.Next() != 0 {
		t.Errorf("oversized op: got %v (chain at %d); want ErrTooLarge, chain unchanged", err, s.Next())
	}
	nearMax := crdt.NewOp(f.alice, f.team, f.msgA.Time, nil, crdt.KindMessage, make([]byte, crdt.MaxOpSize-200))
	if _, err := SealChain(nearMax, f.tag2(), OuterKey(f.k2), s); err != nil {
		t.Errorf("an op near MaxOpSize: got %v; want nil", err)
	}
	to := f.noise()
	bigCommit := crdt.NewOp(f.alice, f.team, f.commit.Time, nil, crdt.KindMember, make([]byte, 40<<10))
	for _, tt := range []struct {
		name   string
		op     *crdt.Op
		dev    *identity.Device
		to     []identity.NoisePublic
		prior  []PriorKey
		want   error
		onlyIn string
	}{
		{"not the author", f.commit, f.bob, to, nil, ErrSeal, ""},
		{"a message", f.msgA, f.alice, to, nil, ErrSeal, ""},
		{"no recipients", f.commit, f.alice, nil, nil, ErrSeal, ""},
		{"too many recipients", f.commit, f.alice, make([]identity.NoisePublic, MaxBoxes+1), nil, ErrSeal, ""},
		{"too many prior keys", f.commit, f.alice, to, make([]PriorKey, MaxPriorKeys+1), ErrSeal, ""},
		{"prior keys not ascending", f.commit, f.alice, to, []PriorKey{{Tag: 2}, {Tag: 1}}, ErrSeal, ""},
		{"prior key of its own tag", f.commit, f.alice, to, []PriorKey{{Tag: f.tag2()}}, ErrSeal, ""},
		{"too large", bigCommit, f.alice, make([]identity.NoisePublic, MaxBoxes), make([]PriorKey, MaxPriorKeys), ErrTooLarge, ""},
		{"low-order recipient key", f.commit, f.alice, []identity.NoisePublic{{}}, nil, nil, "epochkey"},
	} {
		prior := tt.prior
		if tt.name == "too many prior keys" || tt.name == "too large" {
			for i := range prior {
				prior[i].Tag = uint32(i + 1)
			}
		}
		e, err := SealCommit(tt.op, tt.dev, f.k2, tt.to, prior, nil)
		if tt.want == nil {
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.onlyIn)) {
				t.Errorf("%s: got %v; want an error from %s", tt.name, err, tt.onlyIn)
			}
			continue
		}
		if !errors.Is(err, tt.want) || e != nil {
			t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
		}
	}
}

// skipNoSeal skips tests of the cryptography in a fieldmesh_noseal build,
// where the layers do not encrypt or authenticate (see noseal_test.go).
func skipNoSeal(t *testing.T) {
	t.Helper()
	if NoSeal {
		t.Skip("fieldmesh_noseal build: the layers carry plaintext")
	}
}

func openAnyWith(dev *identity.Device, prologue []byte, boxes [][]byte) (int, identity.NoisePublic, []byte, error) {
	return epochkey.OpenAny(dev, prologue, boxes)
}

func sealToEachWith(sender *identity.Device, to []identity.NoisePublic, prologue, payload []byte) ([][]byte, error) {
	return epochkey.SealToEach(sender, to, prologue, payload, detRand(0x5e))
}

// goldenEnvelopes returns the fixture's create, commit and two chain-form
// envelopes (alice at index 0, bob at index 3), named.
func goldenEnvelopes(t testing.TB) (*fixture, []string, [][]byte) {
	f := newFixture(t)
	names := []string{"create", "commit", "chainA", "chainB"}
	return f, names, [][]byte{f.createEnv.Marshal(), f.commitE.Marshal(), f.sealChain(t, f.msgA, 0).Marshal(), f.sealChain(t, f.msgB, 3).Marshal()}
}

// goldenFile is the golden file of this build: noseal.golden is written and
// checked by `go test -tags fieldmesh_noseal`, and only checked to be
// refused by a normal build.
func goldenFile() string {
	if NoSeal {
		return filepath.Join("testdata", "noseal.golden")
	}
	return filepath.Join("testdata", "envelopes.golden")
}

func TestGolden(t *testing.T) {
	f, names, envs := goldenEnvelopes(t)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# envelope encodings (issue #3, version 2), from fixed seeds (noseal build: %v).\n", NoSeal)
	fmt.Fprintf(&buf, "# Regenerate with: go test -run TestGolden -update (and -tags fieldmesh_noseal for noseal.golden)\n")
	fmt.Fprintf(&buf, "team %x\n", f.team[:])
	bob, _ := f.bob.MarshalBinary()
	fmt.Fprintf(&buf, "bob %x\n", bob) // a recipient's private keys (test keys only)
	fmt.Fprintf(&buf, "k1 %x\n", f.k1.Bytes())
	fmt.Fprintf(&buf, "k2 %x\n", f.k2.Bytes())
	for i, e := range envs {
		fmt.Fprintf(&buf, "%s %x\n", names[i], e)
	}
	want := buf.Bytes()
	path := goldenFile()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		if !NoSeal {
			writeCorpus(t, envs)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the envelopes made now (an encoding changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
	// Open the committed bytes with the committed keys.
	vals := parseGolden(t, got)
	team := crdt.TeamID(vals["team"])
	dev, err := identity.UnmarshalDevice(vals["bob"])
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := seal.EpochKeyFromBytes(vals["k2"])
	for _, name := range names {
		e, err := Unmarshal(vals[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var op *crdt.Op
		switch name {
		case "create":
			if _, err := OpenBox(e, dev, team); !errors.Is(err, ErrNotRecipient) {
				t.Errorf("create: bob got %v; want ErrNotRecipient", err)
			}
			k1, _ := seal.EpochKeyFromBytes(vals["k1"])
			op, _, err = OpenCommit(e, OuterKey(k1), team)
		case "commit":
			var k seal.EpochKey
			if k, err = OpenBox(e, dev, team); err == nil {
				if !k.Equal(k2) {
					t.Errorf("commit: bob's box holds another key")
				}
				op, _, err = OpenCommit(e, OuterKey(k), team)
			}
		default:
			var c *Chain
			if c, err = OpenChain(e, OuterKey(k2), team); err == nil {
				op, err = c.Open(senderkey.NewReceiver(k2, c.Sender))
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if op.ID() != e.ID || sha256.Sum256(op.Marshal()) != [32]byte(vals[name][21:53]) {
			t.Errorf("%s: the header id is not the SHA-256 of the op", name)
		}
	}
}

// TestNoSealRefused checks that a normal build cannot open the envelopes
// of a fieldmesh_noseal build (committed in testdata/noseal.golden), and
// that their plaintext is visible in them.
func TestNoSealRefused(t *testing.T) {
	if NoSeal {
		t.Skip("noseal build")
	}
	b, err := os.ReadFile(filepath.Join("testdata", "noseal.golden"))
	if err != nil {
		t.Fatal(err)
	}
	vals := parseGolden(t, b)
	team := crdt.TeamID(vals["team"])
	dev, _ := identity.UnmarshalDevice(vals["bob"])
	k1, _ := seal.EpochKeyFromBytes(vals["k1"])
	k2, _ := seal.EpochKeyFromBytes(vals["k2"])
	if !bytes.Contains(vals["chainA"], []byte("Bed 4: review before noon")) || !bytes.Contains(vals["create"], []byte("Ward 7")) {
		t.Errorf("noseal.golden: want plaintext visible in the noseal envelopes")
	}
	for _, name := range []string{"chainA", "chainB"} {
		e, err := Unmarshal(vals[name])
		if err != nil {
			t.Fatalf("%s: the layout must be that of a normal build: %v", name, err)
		}
		if _, err := OpenChain(e, OuterKey(k2), team); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: got %v; want ErrOpen", name, err)
		}
	}
	e, err := Unmarshal(vals["commit"])
	if err != nil {
		t.Fatal(err)
	}
	k, err := OpenBox(e, dev, team) // the boxes are sealed in both builds
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenCommit(e, OuterKey(k), team); !errors.Is(err, ErrOpen) {
		t.Errorf("commit: got %v; want ErrOpen", err)
	}
	e, _ = Unmarshal(vals["create"])
	if _, _, err := OpenCommit(e, OuterKey(k1), team); !errors.Is(err, ErrOpen) {
		t.Errorf("create: got %v; want ErrOpen", err)
	}
}

func parseGolden(t testing.TB, b []byte) map[string][]byte {
	t.Helper()
	vals := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "#") {
			k, v, _ := strings.Cut(line, " ")
			var err error
			if vals[k], err = hex.DecodeString(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	return vals
}

// writeCorpus rewrites the committed seed corpus of FuzzEnvelope: the
// golden envelopes, and a few cut or changed where the layout is checked.
func writeCorpus(t *testing.T, envs [][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzEnvelope")
	old, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := slices.Clone(envs)
	v1 := bytes.Clone(envs[2])
	v1[0] = 1
	seeds = append(seeds, v1, envs[1][:HeaderSize+2+BoxSize], envs[2][:minChain], envs[0][:HeaderSize+1])
	for _, s := range seeds {
		name := fmt.Sprintf("%x", sha256.Sum256(s))[:16]
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzEnvelope(f *testing.F) {
	fx, _, envs := goldenEnvelopes(f)
	for _, e := range envs {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			if e != nil {
				t.Fatalf("got an envelope and error %v", err)
			}
			return
		}
		if got := e.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity")
		}
		var ops []*crdt.Op
		switch e.Form() {
		case FormChain:
			c, err := OpenChain(e, OuterKey(fx.k2), fx.team)
			if err != nil {
				if c != nil {
					t.Fatalf("got a chain and error %v", err)
				}
				return
			}
			op, err := c.Open(senderkey.NewReceiver(fx.k2, c.Sender))
			if err != nil {
				if op != nil {
					t.Fatalf("got an op and error %v", err)
				}
				return
			}
			if op.Author != c.Sender || isCommitKind(op.Kind) {
				t.Fatalf("Chain.Open accepted an op of another author or kind")
			}
			ops = append(ops, op)
		case FormCommit:
			if k, err := OpenBox(e, fx.bob, fx.team); err == nil {
				if op, _, err := OpenCommit(e, OuterKey(k), fx.team); err == nil {
					ops = append(ops, op)
				}
			}
			if op, _, err := OpenCommit(e, OuterKey(fx.k1), fx.team); err == nil {
				ops = append(ops, op)
			}
		default:
			t.Fatalf("Unmarshal accepted form %v", e.Form())
		}
		for _, op := range ops {
			if op.ID() != e.ID || op.Time != e.Time || op.Team != fx.team || op.Verify() != nil {
				t.Fatalf("an open function accepted an inconsistent op")
			}
		}
	})
}
