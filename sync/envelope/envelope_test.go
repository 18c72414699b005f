package envelope

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
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
	create, commit     *crdt.Op // sealed at their own epoch by crdt.NewOp
	msgA, msgB         *crdt.Op // by alice and bob, not sealed yet
	k1, k2             seal.EpochKey
	recipients         []crdt.Recipient // of the commit, ascending by device
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
	// msgB's time has a counter: the header's longer form.
	f.msgB = crdt.NewOp(f.bob, f.team, crdt.MakeHLC(at.Add(3*time.Second), 3), []crdt.OpID{f.msgA.ID()}, crdt.KindMessage,
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

// device returns the fixture's device with the given id.
func (f *fixture) device(t testing.TB, id identity.DeviceID) *identity.Device {
	t.Helper()
	for _, d := range []*identity.Device{f.alice, f.bob, f.carol, f.outsider} {
		if d.ID() == id {
			return d
		}
	}
	t.Fatalf("no device %v", id.Short())
	return nil
}

// list returns the device ids of the recipients of epoch 2, in the
// commit's order: the list a chain envelope's sender slot indexes.
func (f *fixture) list() []identity.DeviceID {
	var out []identity.DeviceID
	for _, r := range f.recipients {
		out = append(out, r.Device)
	}
	return out
}

// boxOf returns the position of d's box in the commit of epoch 2.
func (f *fixture) boxOf(d *identity.Device) int {
	return slices.IndexFunc(f.recipients, func(r crdt.Recipient) bool { return r.Device == d.ID() })
}

func (f *fixture) tag1() uint32 { return crdt.TagOf(f.create.ID()) }
func (f *fixture) tag2() uint32 { return crdt.TagOf(f.commit.ID()) }

func (f *fixture) sealCommit(t testing.TB, op *crdt.Op, k seal.EpochKey, to []identity.NoisePublic, prior []PriorKey, seed uint64) *Envelope {
	t.Helper()
	e, err := SealCommit(op, f.alice, k, to, prior, detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// sealChain seals op by its author in chain form under epoch 2, with a
// fresh sender chain advanced to index, and returns the envelope and the
// sealed op. It checks what SealChain promises of its results.
func (f *fixture) sealChain(t testing.TB, op *crdt.Op, index int) (*Envelope, *crdt.Op) {
	t.Helper()
	s := senderkey.NewSender(f.k2, op.Author)
	for range index {
		if _, _, err := s.Seal([senderkey.NonceSize]byte{}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := op.Clone()
	e, sealed, err := SealChain(op, f.device(t, op.Author), f.tag2(), OuterKey(f.k2), s, f.boxOf(f.device(t, op.Author)))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case s.Next() != uint32(index+1):
		t.Fatalf("SealChain: sender chain at %d; want %d", s.Next(), index+1)
	case !reflect.DeepEqual(op, before):
		t.Fatalf("SealChain changed its op")
	case sealed.ID() != op.ID() || sealed.Seal.Epoch != f.tag2() || sealed.Seal.Index != uint32(index):
		t.Fatalf("SealChain: sealed op %v at %08x/%d; want %v at %08x/%d", sealed.ID().Short(), sealed.Seal.Epoch, sealed.Seal.Index, op.ID().Short(), f.tag2(), index)
	}
	if err := sealed.Verify(); err != nil {
		t.Fatalf("SealChain: the sealed op does not verify: %v", err)
	}
	return e, sealed
}

// openChain opens a chain-form envelope of epoch 2 with a fresh receiver
// state of its sender.
func (f *fixture) openChain(e *Envelope) (*crdt.Op, error) {
	c, err := OpenChain(e, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		return nil, err
	}
	return c.Open(senderkey.NewReceiver(f.k2, c.Sender))
}

// openCommit opens a commit-form envelope as dev.
func (f *fixture) openCommit(e *Envelope, dev *identity.Device) (*crdt.Op, []PriorKey, seal.EpochKey, error) {
	k, _, err := OpenBox(e, dev, f.team)
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
		"outer key 2": OuterKey(f.k2).Bytes(),
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
	if ChainOverhead != 71 {
		t.Errorf("ChainOverhead = %d; want 71 (sender slot of at most 2, index of at most 5, signature; no tag, the form in the header)", ChainOverhead)
	}
	for i, op := range []*crdt.Op{f.msgA, f.msgB} {
		index := uint32(5 * i)
		e, sealed := f.sealChain(t, op, int(index))
		if e.Topic != TopicOf(f.team) || e.ID != op.ID() || e.Time != op.Time || e.Epoch != f.tag2() || e.Form() != FormChain || e.Boxes() != 0 {
			t.Errorf("op %d: header %v %v %v %08x form %v; want the op's, epoch %08x, chain form", i, e.Topic, e.ID.Short(), e.Time, e.Epoch, e.Form(), f.tag2())
		}
		b := e.Marshal()
		// A slot and an index below 128 are one byte of the 2 and 5 ChainOverhead allows.
		hs := HeaderSize
		if op.Time&0xffff != 0 {
			hs++ // a counter below 128
		}
		if got, want := len(b), hs+ChainOverhead-1-4+len(op.MarshalCompact()); got != want || e.Size() != want {
			t.Errorf("op %d: %d bytes (Size %d); want %d", i, got, e.Size(), want)
		}
		if want := byte(version<<4) | byte(FormChain); b[0]&^hdrCounter != want || (b[0]&hdrCounter != 0) != (op.Time&0xffff != 0) {
			t.Errorf("op %d: first byte %#x; want %#x, with bit 2 if the time has a counter", i, b[0], want)
		}
		f.checkNoSecrets(t, fmt.Sprintf("op %d", i), b)
		if bytes.Contains(b, sealed.Seal.Sig) {
			t.Errorf("op %d: the author's signature is on the wire in the clear", i)
		}
		e2, err := Unmarshal(TopicOf(f.team), b)
		if err != nil {
			t.Fatalf("op %d: Unmarshal: %v", i, err)
		}
		if !reflect.DeepEqual(e2, e) {
			t.Errorf("op %d: Unmarshal got %+v; want %+v", i, e2, e)
		}
		c, err := OpenChain(e2, OuterKey(f.k2), f.team, f.list())
		if err != nil {
			t.Fatalf("op %d: OpenChain: %v", i, err)
		}
		if c.Sender != op.Author || c.Index != index || !reflect.DeepEqual(c.Seal(), sealed.Seal) {
			t.Errorf("op %d: sender %v index %d seal %+v; want %v %d %+v", i, c.Sender.Short(), c.Index, c.Seal(), op.Author.Short(), index, sealed.Seal)
		}
		// Peek does not change the receiver: it opens twice.
		r := senderkey.NewReceiver(f.k2, c.Sender)
		before, _ := r.MarshalBinary()
		for range 2 {
			got, err := c.Peek(r)
			if err != nil || !reflect.DeepEqual(got, sealed) {
				t.Fatalf("op %d: Peek: got %v, %v; want the sealed op", i, got, err)
			}
			if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
				t.Fatalf("op %d: Peek changed the receiver state", i)
			}
		}
		got, err := c.Open(r)
		if err != nil || !reflect.DeepEqual(got, sealed) {
			t.Fatalf("op %d: Open: got %v, %v; want the sealed op", i, got, err)
		}
		if r.Has(index) || r.Next() != index+1 || r.Skipped() != int(index) {
			t.Errorf("op %d: after Open: Has %v, Next %d, Skipped %d; want false, %d, %d", i, r.Has(index), r.Next(), r.Skipped(), index+1, index)
		}
		// Replayed: refused by Peek and Open, the receiver unchanged.
		before, _ = r.MarshalBinary()
		if got, err := c.Peek(r); !errors.Is(err, senderkey.ErrReplay) || got != nil {
			t.Errorf("op %d: Peek of a replay: got %v, %v; want nil, ErrReplay", i, got, err)
		}
		if got, err := c.Open(r); !errors.Is(err, senderkey.ErrReplay) || got != nil {
			t.Errorf("op %d: Open of a replay: got %v, %v; want nil, ErrReplay", i, got, err)
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
	for form, want := range map[Form]string{FormChain: "chain", FormCommit: "commit", 7: "form(7)"} {
		if got := form.String(); got != want {
			t.Errorf("Form(%d).String() = %q; want %q", uint8(form), got, want)
		}
	}
}

// TestPeekTooFarAhead: a message more than senderkey.MaxSkipped past the
// receiver's next index is refused by Peek and Open alike, with the
// receiver unchanged; one exactly MaxSkipped ahead opens. The receiver's
// bookkeeping is the same in a fieldmesh_noseal build (the package
// documentation says the chains advance as in a normal build), so this
// test runs in both.
func TestPeekTooFarAhead(t *testing.T) {
	f := newFixture(t)
	far, _ := f.sealChain(t, f.msgA, senderkey.MaxSkipped+1)
	c, err := OpenChain(far, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	r := senderkey.NewReceiver(f.k2, c.Sender)
	if op, err := c.Peek(r); !errors.Is(err, senderkey.ErrTooFarAhead) || op != nil {
		t.Errorf("Peek %d ahead: got %v, %v; want nil, ErrTooFarAhead", senderkey.MaxSkipped+1, op, err)
	}
	if op, err := c.Open(r); !errors.Is(err, senderkey.ErrTooFarAhead) || op != nil {
		t.Errorf("Open %d ahead: got %v, %v; want nil, ErrTooFarAhead", senderkey.MaxSkipped+1, op, err)
	}
	if r.Next() != 0 || r.Skipped() != 0 {
		t.Errorf("refused messages changed the receiver: Next %d, Skipped %d", r.Next(), r.Skipped())
	}
	edge, sealed := f.sealChain(t, f.msgA, senderkey.MaxSkipped)
	c, err = OpenChain(edge, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	if op, err := c.Peek(r); err != nil || !reflect.DeepEqual(op, sealed) || r.Next() != 0 {
		t.Errorf("Peek %d ahead: got %v (Next %d); want the op, receiver unchanged", senderkey.MaxSkipped, err, r.Next())
	}
	if op, err := c.Open(r); err != nil || !reflect.DeepEqual(op, sealed) || r.Skipped() != senderkey.MaxSkipped {
		t.Errorf("Open %d ahead: got %v (Skipped %d); want the op, %d skipped", senderkey.MaxSkipped, err, r.Skipped(), senderkey.MaxSkipped)
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
	if got, want := len(b), HeaderSize+1+3*BoxSize+sigSize+1+priorSize+len(f.commit.Marshal())+seal.Overhead; got != want {
		t.Errorf("size: got %d; want %d", got, want)
	}
	f.checkNoSecrets(t, "commit", b)
	e2, err := Unmarshal(TopicOf(f.team), b)
	if err != nil || !reflect.DeepEqual(e2, e) {
		t.Fatalf("Unmarshal: got %v; want the envelope", err)
	}
	for _, d := range []*identity.Device{f.alice, f.bob, f.carol} {
		k, sender, err := OpenBox(e2, d, f.team)
		if err != nil {
			t.Fatalf("%v: OpenBox: %v", d.ID().Short(), err)
		}
		if !k.Equal(f.k2) || sender != f.alice.NoisePublic() {
			t.Errorf("%v: OpenBox gave another key, or sender %v; want alice's %v", d.ID().Short(), sender.Short(), f.alice.NoisePublic().Short())
		}
		op, prior, err := OpenCommit(e2, OuterKey(k), f.team)
		if err != nil {
			t.Fatalf("%v: OpenCommit: %v", d.ID().Short(), err)
		}
		if !reflect.DeepEqual(op, f.commit) || op.Seal.Epoch != f.tag2() || op.Seal.Index != 0 || op.Verify() != nil {
			t.Errorf("%v: got another op, or one not sealed at its own epoch: %+v", d.ID().Short(), op.Seal)
		}
		if len(prior) != 1 || prior[0].Tag != f.tag1() || !prior[0].Outer.Equal(OuterKey(f.k1)) {
			t.Errorf("%v: prior keys %v; want the create's outer key", d.ID().Short(), prior)
		}
	}
	// A non-recipient tries every box (one X25519 each) and opens none.
	calls, tried := epochkey.TrialCount()
	if _, _, err := OpenBox(e2, f.outsider, f.team); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("outsider: got %v; want ErrNotRecipient", err)
	}
	if c, m := epochkey.TrialCount(); c != calls+1 || m != tried+3 {
		t.Errorf("outsider: %d trial calls and %d boxes tried; want 1 and 3", c-calls, m-tried)
	}
	// The genesis: one box, no prior keys.
	op, prior, k, err := f.openCommit(f.createEnv, f.alice)
	if err != nil || !k.Equal(f.k1) || prior != nil || !reflect.DeepEqual(op, f.create) {
		t.Errorf("create: got %v, %v; want the create op, no prior keys", prior, err)
	}
	if _, _, err := OpenBox(f.createEnv, f.bob, f.team); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("create, bob: got %v; want ErrNotRecipient", err)
	}
	// Whoever holds the outer key (from prior keys) opens it without a box.
	if op, _, err := OpenCommit(f.createEnv, OuterKey(f.k1), f.team); err != nil || op.ID() != f.create.ID() {
		t.Errorf("create with the outer key: got %v", err)
	}
}

// TestOpenBoxRefusesBeforeTrying: OpenBox refuses what is not a commit of
// this team before any X25519 multiplication.
func TestOpenBoxRefusesBeforeTrying(t *testing.T) {
	f := newFixture(t)
	chain, _ := f.sealChain(t, f.msgA, 0)
	other, _ := crdt.NewTeamID(detRand(0x7f))
	calls, tried := epochkey.TrialCount()
	for _, tt := range []struct {
		name string
		e    *Envelope
		team crdt.TeamID
		want error
	}{
		{"a chain-form envelope", chain, f.team, ErrMalformed},
		{"another team's topic", f.commitE, other, ErrWrongTopic},
		{"an empty ciphertext", &Envelope{Topic: f.commitE.Topic}, f.team, ErrShort},
		{"a commit under another tag", func() *Envelope { c := *f.commitE; c.Epoch ^= 1; return &c }(), f.team, ErrMalformed},
	} {
		if _, _, err := OpenBox(tt.e, f.bob, tt.team); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
		}
	}
	if c, m := epochkey.TrialCount(); c != calls || m != tried {
		t.Errorf("refused envelopes cost %d trial calls and %d boxes; want none", c-calls, m-tried)
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

func TestUnmarshalErrors(t *testing.T) {
	f := newFixture(t)
	chainE, _ := f.sealChain(t, f.msgA, 0)
	chain := chainE.Marshal()
	commit := f.commitE.Marshal()
	with := func(b []byte, i int, v ...byte) []byte { c := bytes.Clone(b); copy(c[i:], v); return c }
	if chainE.Time&0xffff != 0 || f.commitE.Time&0xffff != 0 {
		t.Fatal("the fixture's msgA and commit have times with a counter; the cases below need none")
	}
	boxCount := func(v ...byte) []byte {
		c := append(bytes.Clone(commit[:HeaderSize]), v...)
		return append(c, commit[HeaderSize+1:]...)
	}
	// counter gives chain a time counter of the given uvarint bytes.
	counter := func(v ...byte) []byte {
		c := append(bytes.Clone(chain[:HeaderSize]), v...)
		c[0] |= hdrCounter
		return append(c, chain[HeaderSize:]...)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header cut", chain[:HeaderSize-1], ErrShort},
		{"header only", chain[:HeaderSize], ErrShort},
		{"too large", make([]byte, MaxSize+1), ErrTooLarge},
		{"version 0", with(chain, 0, 0), ErrVersion},
		{"version 1", with(chain, 0, 1), ErrVersion},
		{"version 2", with(chain, 0, 2), ErrVersion},
		{"version 2 commit", with(commit, 0, 2), ErrVersion},
		{"version 3", with(chain, 0, 3), ErrVersion},
		{"version 4", with(chain, 0, 4), ErrVersion},
		{"version 5", with(chain, 0, 5), ErrVersion},
		{"version 6", with(chain, 0, 6), ErrVersion},
		{"version 7", with(chain, 0, 7), ErrVersion},
		{"version 8", with(chain, 0, 8), ErrVersion},
		{"version 8 commit", with(commit, 0, 8), ErrVersion},
		{"first byte 9", with(chain, 0, 9), ErrVersion},
		{"version 10", with(chain, 0, 0xa0|byte(FormChain)), ErrVersion},
		{"version 8 in the top bits", with(chain, 0, 0x80|byte(FormChain)), ErrVersion},
		{"first byte 255", with(chain, 0, 255), ErrVersion},
		{"header bit 3", with(chain, 0, chain[0]|hdrZero), ErrMalformed},
		{"form 0", with(chain, 0, chain[0]&^hdrFormMask), ErrMalformed},
		{"form 3", with(chain, 0, chain[0]|hdrFormMask), ErrMalformed},
		{"counter 0", counter(0), ErrMalformed},
		{"counter not minimal", counter(0x81, 0x00), ErrMalformed},
		{"counter of 17 bits", counter(0x80, 0x80, 0x04), ErrMalformed},
		{"counter cut", append(with(chain[:HeaderSize], 0, chain[0]|hdrCounter), 0x80), ErrShort},
		{"counter 1", counter(1), nil},
		{"counter 65535", counter(0xff, 0xff, 0x03), nil},
		{"chain too short", chain[:minChain-1], ErrShort},
		{"chain of the minimum size", chain[:minChain], nil},
		{"commit under another tag", with(commit, 1, commit[1]^1), ErrMalformed},
		{"chain form under the commit's own tag", with(chain, 1, chain[5:9]...), nil},
		{"commit with 0 boxes", boxCount(0), ErrMalformed},
		{"commit count not minimal", boxCount(0x83, 0x00), ErrMalformed},
		{"commit count 257", boxCount(0x81, 0x02), ErrMalformed},
		{"commit count truncated", boxCount(0x80), ErrMalformed},
		{"commit count over what follows", boxCount(40), ErrShort},
		{"commit without its tail", commit[:HeaderSize+1+3*BoxSize+minCommitTail-1], ErrShort},
		{"commit with the shortest tail", commit[:HeaderSize+1+3*BoxSize+minCommitTail], nil},
	}
	for _, tt := range tests {
		e, err := Unmarshal(TopicOf(f.team), tt.in)
		if tt.want == nil {
			if err != nil || e == nil || !bytes.Equal(e.Marshal(), tt.in) {
				t.Errorf("%s: got %v; want the envelope", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || e != nil {
			t.Errorf("%s: got %v, %v; want nil, %v", tt.name, e, err, tt.want)
		}
	}
	for _, v := range []byte{1, 2, 3, 4, 5, 6, 7, 8} {
		if _, err := Unmarshal(TopicOf(f.team), with(chain, 0, v)); err == nil || !bytes.Contains([]byte(err.Error()), fmt.Appendf(nil, "version %d", v)) {
			t.Errorf("version %d: got %v; want an error that names version %d", v, err, v)
		}
	}
	// The largest accepted size decodes (and fails to open).
	big := append(bytes.Clone(chain[:HeaderSize]), make([]byte, MaxSize-HeaderSize)...)
	e, err := Unmarshal(TopicOf(f.team), big)
	if err != nil {
		t.Fatalf("MaxSize: got %v; want nil", err)
	}
	if _, err := OpenChain(e, OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
		t.Errorf("MaxSize OpenChain: got %v; want ErrBadSeal", err)
	}
	// Unmarshal does not alias its input.
	b := bytes.Clone(chain)
	e, _ = Unmarshal(TopicOf(f.team), b)
	b[len(b)-1] ^= 1
	if _, err := f.openChain(e); err != nil {
		t.Errorf("after changing the input buffer: got %v; want nil", err)
	}
	// Boxes of a malformed commit built in memory: 0.
	if n := (&Envelope{Ciphertext: []byte{byte(FormCommit), 0}}).Boxes(); n != 0 {
		t.Errorf("Boxes of a malformed commit: %d; want 0", n)
	}
}

func TestSealChainErrors(t *testing.T) {
	f := newFixture(t)
	tag, outer := f.tag2(), OuterKey(f.k2)
	huge := crdt.NewOp(f.alice, f.team, f.msgA.Time, nil, crdt.KindMessage, make([]byte, MaxSize))
	for _, tt := range []struct {
		name string
		op   *crdt.Op
		dev  *identity.Device
		want error
	}{
		{"another author's op", f.msgB, f.alice, ErrSeal},
		{"a device that is not the author", f.msgA, f.bob, ErrSeal},
		{"a commit op", f.commit, f.alice, ErrSeal},
		{"a create op", f.create, f.alice, ErrSeal},
		{"an oversized op", huge, f.alice, ErrTooLarge},
	} {
		s := senderkey.NewSender(f.k2, f.alice.ID())
		e, sealed, err := SealChain(tt.op, tt.dev, tag, outer, s, f.boxOf(f.alice))
		if !errors.Is(err, tt.want) || e != nil || sealed != nil || s.Next() != 0 {
			t.Errorf("%s: got %v (chain at %d); want %v, chain unchanged", tt.name, err, s.Next(), tt.want)
		}
	}
	s := senderkey.NewSender(f.k2, f.alice.ID())
	nearMax := crdt.NewOp(f.alice, f.team, f.msgA.Time, nil, crdt.KindMessage, make([]byte, crdt.MaxOpSize-200))
	for _, slot := range []int{-1, MaxBoxes} {
		if e, _, err := SealChain(nearMax, f.alice, tag, outer, s, slot); !errors.Is(err, ErrSeal) || e != nil || s.Next() != 0 {
			t.Errorf("sender slot %d: got %v; want ErrSeal, chain unchanged", slot, err)
		}
	}
	if _, _, err := SealChain(nearMax, f.alice, tag, outer, s, f.boxOf(f.alice)); err != nil || s.Next() != 1 {
		t.Errorf("an op near MaxOpSize: got %v; want nil", err)
	}
	s.Wipe() // exhausted
	if e, _, err := SealChain(f.msgA, f.alice, tag, outer, s, f.boxOf(f.alice)); !errors.Is(err, senderkey.ErrExhausted) || e != nil {
		t.Errorf("an exhausted chain: got %v; want senderkey.ErrExhausted", err)
	}
}

func TestSealCommitErrors(t *testing.T) {
	f := newFixture(t)
	to := f.noise()
	bigCommit := crdt.NewOp(f.alice, f.team, f.commit.Time, nil, crdt.KindMember, make([]byte, 40<<10))
	unsealed := f.commit.Clone()
	unsealed.Seal = crdt.Seal{}
	atIndex1 := f.commit.Clone()
	atIndex1.Sign(f.alice, f.tag2(), 1, crdt.InnerHash{})
	otherEpoch := f.commit.Clone()
	otherEpoch.Sign(f.alice, f.tag1(), 0, crdt.InnerHash{})
	weak := slices.Clone(to)
	weak[1] = identity.NoisePublic{} // all zeros: of small order
	for _, tt := range []struct {
		name  string
		op    *crdt.Op
		dev   *identity.Device
		to    []identity.NoisePublic
		prior []PriorKey
		want  error
	}{
		{"not the author", f.commit, f.bob, to, nil, ErrSeal},
		{"a message", f.msgA, f.alice, to, nil, ErrSeal},
		{"not sealed", unsealed, f.alice, to, nil, ErrSeal},
		{"sealed at index 1", atIndex1, f.alice, to, nil, ErrSeal},
		{"sealed at another epoch", otherEpoch, f.alice, to, nil, ErrSeal},
		{"no recipients", f.commit, f.alice, nil, nil, ErrSeal},
		{"too many recipients", f.commit, f.alice, make([]identity.NoisePublic, MaxBoxes+1), nil, ErrSeal},
		{"too many prior keys", f.commit, f.alice, to, ascending(MaxPriorKeys + 1), ErrSeal},
		{"prior keys not ascending", f.commit, f.alice, to, []PriorKey{{Tag: 2}, {Tag: 1}}, ErrSeal},
		{"prior keys repeated", f.commit, f.alice, to, []PriorKey{{Tag: 2}, {Tag: 2}}, ErrSeal},
		{"prior key of its own tag", f.commit, f.alice, to, []PriorKey{{Tag: f.tag2()}}, ErrSeal},
		{"too large", bigCommit, f.alice, make([]identity.NoisePublic, MaxBoxes), ascending(MaxPriorKeys), ErrTooLarge},
		{"a small-order recipient key", f.commit, f.alice, weak, nil, epochkey.ErrSeal},
	} {
		e, err := SealCommit(tt.op, tt.dev, f.k2, tt.to, tt.prior, detRand(9))
		if !errors.Is(err, tt.want) || e != nil {
			t.Errorf("%s: got %v; want %v", tt.name, err, tt.want)
		}
	}
	// The most prior keys fit.
	if _, err := SealCommit(f.commit, f.alice, f.k2, to, ascending(MaxPriorKeys), detRand(9)); err != nil {
		t.Errorf("MaxPriorKeys prior keys: got %v; want nil", err)
	}
}

// ascending returns n prior keys with tags 1..n (none the fixture's).
func ascending(n int) []PriorKey {
	p := make([]PriorKey, n)
	for i := range p {
		p[i].Tag = uint32(i + 1)
	}
	return p
}

// skipNoSeal skips tests of the cryptography in a fieldmesh_noseal build,
// where the layers do not encrypt or authenticate (see noseal_test.go).
func skipNoSeal(t *testing.T) {
	t.Helper()
	if NoSeal {
		t.Skip("fieldmesh_noseal build: the layers carry plaintext")
	}
}
