package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// region is a byte range [from, to) of an envelope and the errors a change
// there may give (any one of them).
type region struct {
	name     string
	from, to int
	want     []error
}

func regionOf(rs []region, i int) region {
	for _, r := range rs {
		if i >= r.from && i < r.to {
			return r
		}
	}
	panic(fmt.Sprintf("no region holds byte %d", i))
}

func isAny(err error, want []error) bool {
	for _, w := range want {
		if errors.Is(err, w) {
			return true
		}
	}
	return false
}

// TestTamperEveryByte changes each byte of an envelope of each form in
// turn (three ways), truncates and extends it, and checks that every result
// is refused with the error of the part it changed. Who refuses: for the
// chain form, anyone holding the epoch's outer key and list, by the
// sender's signature (OpenChain, ErrBadSeal), before any chain key is
// touched; for the commit form, a recipient (OpenBox, OpenCommit).
func TestTamperEveryByte(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	chain, _ := f.sealChain(t, f.msgA, 0)
	ch, ck := chain.HeaderLen(), f.commitE.HeaderLen()
	boxesAt := ck + 1 // a one-byte count
	bob := boxesAt + f.boxOf(f.bob)*BoxSize
	commitTail := boxesAt + 3*BoxSize // where the outer layer starts
	for _, tt := range []struct {
		name    string
		e       *Envelope
		open    func(*Envelope) error
		regions []region
		cut     func(n int) error // the error of the envelope cut to n bytes
	}{
		{
			name: "chain",
			e:    chain,
			open: func(e *Envelope) error { _, err := f.openChain(e); return err },
			regions: []region{
				// The outer layer has no tag: every byte is refused by the
				// sender's signature, which whoever holds the outer key checks.
				// The first byte: another version, form or counter bit (a counter
				// then read from the outer layer, or the time's lost).
				{"version, form", 0, 1, []error{ErrVersion, ErrMalformed, ErrShort, ErrBadSeal}},
				{"epoch, id, time", 1, ch, []error{ErrBadSeal}},
				{"outer layer", ch, chain.Size(), []error{ErrBadSeal}},
			},
			cut: func(n int) error {
				if n < minChain {
					return ErrShort
				}
				return ErrBadSeal
			},
		},
		{
			name: "commit",
			e:    f.commitE,
			open: func(e *Envelope) error { _, _, _, err := f.openCommit(e, f.bob); return err },
			regions: []region{
				{"version, form", 0, 1, []error{ErrVersion, ErrMalformed, ErrShort, ErrNotRecipient}},
				{"epoch, id[:4]", 1, 9, []error{ErrMalformed}}, // the tag is the id's
				{"id[4:], time", 9, ck, []error{ErrNotRecipient}},
				// Another count reads another layout: refused by it, or bob's box
				// is cut off, or the outer layer (whose ad holds the count) fails.
				{"box count", ck, boxesAt, []error{ErrMalformed, ErrShort, ErrNotRecipient, ErrOpen}},
				{"boxes before bob's", boxesAt, bob, []error{ErrOpen}},
				{"bob's box", bob, bob + BoxSize, []error{ErrNotRecipient}},
				{"boxes after bob's", bob + BoxSize, commitTail, []error{ErrOpen}},
				{"outer layer", commitTail, f.commitE.Size(), []error{ErrOpen}},
			},
			cut: func(n int) error {
				switch {
				case n < ck:
					return ErrShort
				case n == ck:
					return ErrMalformed // no box count
				case n < commitTail+minCommitTail:
					return ErrShort
				}
				return ErrOpen
			},
		},
	} {
		b := tt.e.Marshal()
		try := func(c []byte) error {
			e, err := Unmarshal(TopicOf(f.team), c)
			if err != nil {
				return err
			}
			return tt.open(e)
		}
		if err := try(b); err != nil {
			t.Fatalf("%s: untouched: got %v; want nil", tt.name, err)
		}
		for i := range b {
			r := regionOf(tt.regions, i)
			for _, x := range []byte{0x01, 0x80, 0xff} {
				c := bytes.Clone(b)
				c[i] ^= x
				if err := try(c); !isAny(err, r.want) {
					t.Fatalf("%s: byte %d (%s) ^ %#x: got %v; want one of %v", tt.name, i, r.name, x, err, r.want)
				}
			}
		}
		for n := range len(b) {
			if err := try(b[:n]); !errors.Is(err, tt.cut(n)) {
				t.Fatalf("%s: cut to %d bytes: got %v; want %v", tt.name, n, err, tt.cut(n))
			}
		}
		if err := try(append(bytes.Clone(b), 0)); !errors.Is(err, tt.cut(len(b))) {
			t.Fatalf("%s: extended: got %v; want %v", tt.name, err, tt.cut(len(b)))
		}
	}
}

// sealedAt returns dev's signature of op id at (tag, index) in the
// fixture's team, as sender at sender's slot in the fixture's list (0 for
// a device not in it), with the inner hash of inner (the inner ciphertext)
// under e's header (crdt.SignedBytes; dev may sign for another sender,
// which is a forgery).
func (f *fixture) sealedAt(dev *identity.Device, tag uint32, sender identity.DeviceID, index uint32, id crdt.OpID, e *Envelope, inner []byte) []byte {
	slot := max(slices.Index(f.list(), sender), 0)
	return dev.Sign(crdt.SignedBytes(f.team, tag, sender, index, id, innerHashOf(e, slot, inner)))
}

// innerHashOf is the inner hash (innerHash) of inner (the inner
// ciphertext) at slot under e's topic and header.
func innerHashOf(e *Envelope, slot int, inner []byte) crdt.InnerHash {
	return innerHash(e.appendBound(nil, FormChain), slot, inner)
}

// outerLayer returns plain encrypted as e's outer layer under outer (the
// chain form's ciphertext after the form byte).
func outerLayer(e *Envelope, outer seal.EpochKey, plain []byte) []byte {
	out := make([]byte, len(plain))
	outerStream(outer, nonceOf(e.ID), out, plain)
	return out
}

// wrapChain builds a chain-form envelope with e's header around the given
// outer plaintext fields (sender, index, signature) and inner layer (the
// inner ciphertext), encrypted under outer: what a device holding the outer
// key can do.
func wrapChain(e *Envelope, outer seal.EpochKey, slot int, index uint32, sig, inner []byte) *Envelope {
	plain := binary.AppendUvarint(binary.AppendUvarint(nil, uint64(slot)), uint64(index))
	plain = append(append(plain, sig...), inner...)
	c := *e
	c.Ciphertext = append([]byte{byte(FormChain)}, outerLayer(e, outer, plain)...)
	return &c
}

// TestTamperLayers changes each byte inside the layers of a genuine
// envelope, re-sealing what is around it with the right keys (what a
// member holding the outer key, or the epoch key, can do), and checks the
// error: a changed sender, index or signature is ErrBadSeal (OpenChain
// checks it before any chain key is spent); a changed inner layer is
// ErrOpen at Peek, with the receiver unchanged; a changed commit plaintext
// is ErrBadOp.
func TestTamperLayers(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	e, sealed := f.sealChain(t, f.msgA, 2)
	c, err := OpenChain(e, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	outer := OuterKey(f.k2)
	if again, err := OpenChain(wrapChain(e, outer, c.Slot, c.Index, c.Sig, c.inner), outer, f.team, f.list()); err != nil || again.Index != 2 {
		t.Fatalf("re-wrapped untouched: got %v; want the chain", err)
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x01; return c }
	// Every other sender slot: another member's (its key does not verify
	// alice's signature), past the list, past MaxBoxes.
	for slot := range MaxBoxes + 2 {
		if slot == c.Slot {
			continue
		}
		if _, err := OpenChain(wrapChain(e, outer, slot, c.Index, c.Sig, c.inner), outer, f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Fatalf("sender slot %d for a seal at slot %d: got %v; want ErrBadSeal", slot, c.Slot, err)
		}
	}
	for _, index := range []uint32{0, 1, 3, senderkey.MaxIndex} {
		if _, err := OpenChain(wrapChain(e, outer, c.Slot, index, c.Sig, c.inner), outer, f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Fatalf("index %d for a seal at 2: got %v; want ErrBadSeal", index, err)
		}
	}
	for i := range sigSize {
		if _, err := OpenChain(wrapChain(e, outer, c.Slot, c.Index, flip(c.Sig, i), c.inner), outer, f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Fatalf("signature byte %d: got %v; want ErrBadSeal", i, err)
		}
	}
	// A changed inner layer under the genuine signature is refused by the
	// outer key alone (version 7: the signature covers the inner layer's
	// hash); before that, only a holder of the sender's chain could tell.
	r := senderkey.NewReceiver(f.k2, c.Sender)
	for i := range c.inner {
		if _, err := OpenChain(wrapChain(e, outer, c.Slot, c.Index, c.Sig, flip(c.inner, i)), outer, f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Fatalf("inner byte %d: OpenChain got %v; want ErrBadSeal", i, err)
		}
	}
	// The sender's own signature over a broken inner layer passes the outer
	// check; the chain holder refuses it (ErrOpen) without spending the key.
	broken := flip(c.inner, 0)
	bc, err := OpenChain(wrapChain(e, outer, c.Slot, c.Index, f.sealedAt(f.alice, f.tag2(), c.Sender, c.Index, e.ID, e, broken), broken), outer, f.team, f.list())
	if err != nil {
		t.Fatalf("the sender's signature of a broken inner layer: OpenChain: %v", err)
	}
	before, _ := r.MarshalBinary()
	if op, err := bc.Open(r); !errors.Is(err, ErrOpen) || !errors.Is(err, ErrBadOp) || op != nil {
		t.Fatalf("a broken inner layer signed by its sender: got %v, %v; want nil, ErrOpen (ErrBadOp: not the op of the id)", op, err)
	}
	if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
		t.Errorf("a refused inner layer changed the receiver state")
	}
	if op, err := c.Open(r); err != nil || op.ID() != sealed.ID() {
		t.Errorf("the genuine envelope after the tampered ones: got %v; want the op", err)
	}
	// An outer layer too short for sender, index and signature is refused
	// by the layout check; one that does not hold them, or holds an index
	// out of range, is ErrBadSeal.
	rewrap := func(plain []byte) *Envelope {
		c := *e
		c.Ciphertext = append([]byte{byte(FormChain)}, outerLayer(e, outer, plain)...)
		return &c
	}
	if _, err := OpenChain(rewrap(make([]byte, 1+1+sigSize-1)), outer, f.team, f.list()); !errors.Is(err, ErrShort) {
		t.Errorf("outer layer of %d bytes: got %v; want ErrShort", 1+1+sigSize-1, err)
	}
	slot := []byte{byte(c.Slot)}
	withIndex := func(index ...byte) []byte {
		p := append(append(bytes.Clone(slot), index...), c.Sig...)
		return append(p, c.inner...)
	}
	withSlot := func(s ...byte) []byte {
		p := append(append(bytes.Clone(s), 0x02), c.Sig...)
		return append(p, c.inner...)
	}
	for _, tc := range []struct {
		name  string
		plain []byte
	}{
		{"index not minimal", withIndex(0x82, 0x00)},
		{"index over MaxIndex", withIndex(0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"index truncated", append(bytes.Clone(slot), 0x80)},
		{"signature truncated", withIndex(0x02)[:1+1+sigSize-1]},
		{"slot not minimal", withSlot(byte(c.Slot)|0x80, 0x00)},
		{"slot at MaxBoxes", withSlot(0x80, 0x02)},
		{"slot truncated", []byte{0x80}},
	} {
		if _, err := OpenChain(rewrap(tc.plain), outer, f.team, f.list()); !errors.Is(err, ErrBadSeal) && !errors.Is(err, ErrShort) {
			t.Errorf("%s: got %v; want ErrBadSeal", tc.name, err)
		}
	}
	if got, err := OpenChain(rewrap(withIndex(0x02)), outer, f.team, f.list()); err != nil || got.Index != 2 {
		t.Errorf("re-wrapped by hand: got %v; want the chain at index 2", err)
	}

	// The commit form: every byte of the plaintext of the outer layer,
	// re-sealed under the right outer key.
	k, _, err := OpenBox(f.commitE, f.bob, f.team)
	if err != nil {
		t.Fatal(err)
	}
	_, end := f.commitE.boxes()
	cad := append(f.commitE.appendBound(nil, FormCommit), f.commitE.Ciphertext[:end]...)
	plain, err := outerOpen(OuterKey(k), nonceOf(f.commitE.ID), cad, f.commitE.Ciphertext[end:])
	if err != nil {
		t.Fatal(err)
	}
	reseal := func(p []byte) *Envelope {
		c := *f.commitE
		c.Ciphertext = append(bytes.Clone(f.commitE.Ciphertext[:end]), outerSeal(OuterKey(k), nonceOf(f.commitE.ID), cad, p)...)
		return &c
	}
	if op, _, err := OpenCommit(reseal(plain), OuterKey(k), f.team); err != nil || op.ID() != f.commit.ID() {
		t.Fatalf("re-sealed untouched: got %v; want the op", err)
	}
	for i := range plain {
		for _, x := range []byte{0x01, 0x80} {
			p := bytes.Clone(plain)
			p[i] ^= x
			if op, prior, err := OpenCommit(reseal(p), OuterKey(k), f.team); !errors.Is(err, ErrBadOp) || op != nil || prior != nil {
				t.Fatalf("commit plaintext byte %d ^ %#x: got %v; want ErrBadOp", i, x, err)
			}
		}
	}
}

// TestBadSeal: OpenChain refuses a genuine inner layer whose seal is not
// its sender's signature of this op at this position of this epoch and
// team (ErrBadSeal), before a chain key is touched.
func TestBadSeal(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	e, _ := f.sealChain(t, f.msgA, 0)
	c, err := OpenChain(e, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := crdt.NewTeamID(detRand(0x7f))
	alice := f.alice.ID()
	h := innerHashOf(e, c.Slot, c.inner)
	at := func(dev *identity.Device, tag uint32, sender identity.DeviceID, index uint32, id crdt.OpID) []byte {
		return f.sealedAt(dev, tag, sender, index, id, e, c.inner)
	}
	for _, tt := range []struct {
		name   string
		sender identity.DeviceID
		sig    []byte
		want   error
	}{
		{"genuine", alice, at(f.alice, f.tag2(), alice, 0, f.msgA.ID()), nil},
		{"signed by a member for the sender", alice, at(f.bob, f.tag2(), alice, 0, f.msgA.ID()), ErrBadSeal},
		{"claimed by a member", f.bob.ID(), at(f.bob, f.tag2(), f.bob.ID(), 0, f.msgA.ID()), ErrBadSeal}, // the sig verifies; the inner layer is alice's
		{"signed at another index", alice, at(f.alice, f.tag2(), alice, 1, f.msgA.ID()), ErrBadSeal},
		{"signed in another epoch", alice, at(f.alice, f.tag1(), alice, 0, f.msgA.ID()), ErrBadSeal},
		{"signed for another op", alice, at(f.alice, f.tag2(), alice, 0, f.msgB.ID()), ErrBadSeal},
		{"signed for another inner layer", alice, f.alice.Sign(crdt.SignedBytes(f.team, f.tag2(), alice, 0, f.msgA.ID(), crdt.InnerHash{1})), ErrBadSeal},
		{"signed in another team", alice, f.alice.Sign(crdt.SignedBytes(other, f.tag2(), alice, 0, f.msgA.ID(), h)), ErrBadSeal},
		{"signed under another domain", alice, f.alice.Sign(append([]byte("fieldmesh/op/v3"), crdt.SignedBytes(f.team, f.tag2(), alice, 0, f.msgA.ID(), h)[len("fieldmesh/op/v4"):]...)), ErrBadSeal},
		{"zero signature", alice, make([]byte, sigSize), ErrBadSeal},
	} {
		got, err := OpenChain(wrapChain(e, OuterKey(f.k2), f.boxOf(f.device(t, tt.sender)), 0, tt.sig, c.inner), OuterKey(f.k2), f.team, f.list())
		switch {
		case tt.name == "claimed by a member":
			// bob's own signature of the position verifies: the outer layer
			// passes, and the inner layer, alice's, does not open in bob's chain.
			if err != nil {
				t.Errorf("%s: OpenChain: %v", tt.name, err)
				continue
			}
			r := senderkey.NewReceiver(f.k2, f.bob.ID())
			if op, err := got.Open(r); !errors.Is(err, ErrOpen) || op != nil || r.Next() != 0 {
				t.Errorf("%s: Open: got %v; want ErrOpen, receiver unchanged", tt.name, err)
			}
		case tt.want == nil:
			if err != nil {
				t.Errorf("%s: got %v; want nil", tt.name, err)
			}
		case !errors.Is(err, tt.want) || got != nil:
			t.Errorf("%s: got %v, %v; want nil, %v", tt.name, got, err, tt.want)
		}
	}
}

// TestEquivocation: a sender whose state was rolled back seals two
// different ops at one position. Both outer layers open and their seals
// verify; together they are evidence (crdt.Evidence) against the sender;
// the inner layers are under different nonces (the op ids), and once one
// is opened the other is a replay.
func TestEquivocation(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	other := crdt.NewOp(f.alice, f.team, f.msgA.Time+1, nil, crdt.KindMessage, crdt.Message{Text: "another"}.Marshal())
	ea, _ := f.sealChain(t, f.msgA, 4)
	eb, _ := f.sealChain(t, other, 4)
	ca, err := OpenChain(ea, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := OpenChain(eb, OuterKey(f.k2), f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	if ca.Sender != cb.Sender || ca.Index != cb.Index || ca.Seal().Epoch != cb.Seal().Epoch {
		t.Fatalf("want one position: %v/%d and %v/%d", ca.Sender.Short(), ca.Index, cb.Sender.Short(), cb.Index)
	}
	ev := crdt.NewEvidence(ca.Sender, ca.Seal().Epoch, ca.Index, crdt.SealedOf(ea.ID, ca.Seal()), crdt.SealedOf(eb.ID, cb.Seal()))
	if !ev.Verify(f.team) {
		t.Errorf("the two seals are not evidence of equivocation")
	}
	// One message key, two nonces (each op's id): two keystreams.
	keystream := func(ct, pt []byte) []byte {
		ks := make([]byte, min(len(ct), len(pt), 16))
		for i := range ks {
			ks[i] = ct[i] ^ pt[i]
		}
		return ks
	}
	if bytes.Equal(keystream(ca.inner, f.msgA.MarshalCompact()), keystream(cb.inner, other.MarshalCompact())) {
		t.Errorf("two ops under one message key got the same keystream (one nonce)")
	}
	r := senderkey.NewReceiver(f.k2, f.alice.ID())
	if _, err := cb.Peek(r); err != nil {
		t.Errorf("Peek of the second: %v", err)
	}
	if op, err := ca.Open(r); err != nil || op.ID() != f.msgA.ID() {
		t.Fatalf("Open of the first: %v", err)
	}
	if _, err := cb.Open(r); !errors.Is(err, senderkey.ErrReplay) {
		t.Errorf("Open of the second after the first: got %v; want ErrReplay", err)
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
	withCT := func(e *Envelope, ct []byte) *Envelope { c := *e; c.Ciphertext = ct; return &c }

	t.Run("box into another commit", func(t *testing.T) {
		// e3 with the boxes of the commit of epoch 2.
		_, end2 := f.commitE.boxes()
		_, end3 := e3.boxes()
		ct := append(bytes.Clone(f.commitE.Ciphertext[:end2]), e3.Ciphertext[end3:]...)
		if _, _, err := OpenBox(withCT(e3, ct), f.bob, f.team); !errors.Is(err, ErrNotRecipient) {
			t.Errorf("got %v; want ErrNotRecipient", err)
		}
	})
	t.Run("box under another epoch tag, id or time", func(t *testing.T) {
		for _, mut := range []func(*Envelope){
			func(e *Envelope) { e.Epoch ^= 1 },
			func(e *Envelope) { e.Time++ },
			func(e *Envelope) { e.ID[len(e.ID)-1] ^= 1 },
		} {
			c := *f.commitE
			mut(&c)
			if _, _, err := OpenBox(&c, f.bob, f.team); err == nil {
				t.Errorf("got nil; want an error")
			}
		}
	})
	t.Run("box into another team or topic", func(t *testing.T) {
		c := *f.commitE
		c.Topic = TopicOf(otherTeam)
		if _, _, err := OpenBox(&c, f.bob, otherTeam); !errors.Is(err, ErrNotRecipient) {
			t.Errorf("other team, its topic: got %v; want ErrNotRecipient", err)
		}
		if _, _, err := OpenBox(f.commitE, f.bob, otherTeam); !errors.Is(err, ErrWrongTopic) {
			t.Errorf("other team, this topic: got %v; want ErrWrongTopic", err)
		}
		// The boxes under the prologue of another team but this topic do not open.
		boxes, _ := f.commitE.boxes()
		if _, _, _, err := epochkey.OpenAny(f.bob, BoxPrologue(otherTeam, f.commitE), boxes); err == nil {
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
	chainA, _ := f.sealChain(t, f.msgA, 0)
	chainB, _ := f.sealChain(t, f.msgB, 0)
	t.Run("chain outer layer into another envelope", func(t *testing.T) {
		if _, err := OpenChain(withCT(chainB, chainA.Ciphertext), OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Errorf("got %v; want ErrBadSeal", err)
		}
	})
	t.Run("chain envelope into another epoch", func(t *testing.T) {
		c := *chainA
		c.Epoch = f.tag1()
		if _, err := OpenChain(&c, OuterKey(f.k1), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Errorf("other epoch's key: got %v; want ErrBadSeal", err)
		}
		if _, err := OpenChain(&c, OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Errorf("tag changed, right key: got %v; want ErrBadSeal", err)
		}
	})
	t.Run("chain envelope into another team or topic", func(t *testing.T) {
		c := *chainA
		c.Topic = TopicOf(otherTeam)
		if _, err := OpenChain(&c, OuterKey(f.k2), otherTeam, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Errorf("other topic: got %v; want ErrBadSeal", err)
		}
		if _, err := OpenChain(chainA, OuterKey(f.k2), otherTeam, f.list()); !errors.Is(err, ErrWrongTopic) {
			t.Errorf("other team: got %v; want ErrWrongTopic", err)
		}
	})
	t.Run("inner layer into another envelope", func(t *testing.T) {
		ca, err := OpenChain(chainA, OuterKey(f.k2), f.team, f.list())
		if err != nil {
			t.Fatal(err)
		}
		// A member holding the outer key re-wraps A's inner layer and seal in
		// B's header: the seal is of A's id, so it does not verify.
		moved := wrapChain(chainB, OuterKey(f.k2), ca.Slot, ca.Index, ca.Sig, ca.inner)
		if _, err := OpenChain(moved, OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Errorf("A's seal in B's header: got %v; want ErrBadSeal", err)
		}
		// Even with the sender's own signature of B's id at that position
		// (she equivocates), A's inner layer does not open under B's header.
		sig := f.sealedAt(f.alice, f.tag2(), ca.Sender, ca.Index, chainB.ID, chainB, ca.inner)
		cf, err := OpenChain(wrapChain(chainB, OuterKey(f.k2), ca.Slot, ca.Index, sig, ca.inner), OuterKey(f.k2), f.team, f.list())
		if err != nil {
			t.Fatalf("the re-wrapped outer layer with a valid seal: %v", err)
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

// hand builds envelopes with any content under a valid layout, as a member
// holding the keys could.
type hand struct {
	f   *fixture
	hdr Envelope
}

// chain seals pt in sender's chain at index 0, with sender's valid seal of
// the header's id at (the header's epoch, 0).
func (h hand) chain(t *testing.T, sender *identity.Device, pt []byte) *Envelope {
	t.Helper()
	e := h.hdr
	s := senderkey.NewSender(h.f.k2, sender.ID())
	_, ct, err := s.SealStream(nonceOf(e.ID), pt)
	if err != nil {
		t.Fatal(err)
	}
	sig := h.f.sealedAt(sender, e.Epoch, sender.ID(), 0, e.ID, &e, ct)
	return wrapChain(&e, OuterKey(h.f.k2), h.f.boxOf(sender), 0, sig, ct)
}

// commit seals plain (sig ‖ prior ‖ op) under k with one box to bob.
func (h hand) commit(t *testing.T, k seal.EpochKey, plain func(ad []byte) []byte) *Envelope {
	t.Helper()
	e := h.hdr
	e.Epoch = crdt.TagOf(e.ID)
	boxes, err := epochkey.SealToEach(h.f.alice, []identity.NoisePublic{h.f.bob.NoisePublic()}, BoxPrologue(h.f.team, &e), k.Bytes(), detRand(0x5e))
	if err != nil {
		t.Fatal(err)
	}
	c := append([]byte{byte(FormCommit), 1}, boxes[0]...)
	ad := append(e.appendBound(nil, FormCommit), c...)
	e.Ciphertext = append(c, outerSeal(OuterKey(k), nonceOf(e.ID), ad, plain(ad))...)
	return &e
}

func TestOpenErrors(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	other, _ := crdt.NewTeamID(detRand(99))
	otherTeamOp := crdt.NewOp(f.alice, other, f.msgA.Time, nil, crdt.KindMessage, f.msgA.Body)
	hdrOf := func(op *crdt.Op) hand {
		return hand{f, Envelope{Topic: TopicOf(f.team), Epoch: f.tag2(), ID: op.ID(), Time: op.Time}}
	}
	good, _ := f.sealChain(t, f.msgA, 0)
	chainCases := []struct {
		name string
		e    *Envelope
		want error
	}{
		{"good", good, nil},
		{"hand-built good", hdrOf(f.msgA).chain(t, f.alice, f.msgA.MarshalCompact()), nil},
		{"garbage plaintext", hdrOf(f.msgA).chain(t, f.alice, []byte("not an op")), crdt.ErrTruncated}, // 'n': kind 14, 3 parents
		{"the op's full content (MarshalContent, not MarshalCompact)", hdrOf(f.msgA).chain(t, f.alice, f.msgA.MarshalContent()), ErrBadOp},
		{"id of another op", hand{f, Envelope{Topic: good.Topic, Epoch: good.Epoch, ID: f.msgB.ID(), Time: f.msgA.Time}}.chain(t, f.alice, f.msgA.MarshalCompact()), ErrBadOp},
		{"time differs", hand{f, Envelope{Topic: good.Topic, Epoch: good.Epoch, ID: f.msgA.ID(), Time: f.msgA.Time + 1}}.chain(t, f.alice, f.msgA.MarshalCompact()), ErrBadOp},
		{"op of another team", hdrOf(otherTeamOp).chain(t, f.alice, otherTeamOp.MarshalCompact()), ErrBadOp},
		{"in another sender's chain", hdrOf(f.msgA).chain(t, f.bob, f.msgA.MarshalCompact()), ErrBadOp},
		{"a commit op in chain form", hdrOf(f.commit).chain(t, f.alice, f.commit.MarshalCompact()), ErrBadOp},
	}
	for _, tt := range chainCases {
		c, err := OpenChain(tt.e, OuterKey(f.k2), f.team, f.list())
		if err != nil {
			t.Errorf("%s: OpenChain: %v", tt.name, err)
			continue
		}
		r := senderkey.NewReceiver(f.k2, c.Sender)
		got, err := c.Open(r)
		if tt.want == nil {
			if err != nil || got == nil || got.Verify() != nil {
				t.Errorf("%s: got %v, %v; want a verified op, nil", tt.name, got, err)
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
	c, _ := OpenChain(good, OuterKey(f.k2), f.team, f.list())
	if _, err := c.Peek(senderkey.NewReceiver(f.k2, f.bob.ID())); !errors.Is(err, ErrOpen) {
		t.Errorf("receiver of another sender: got %v; want ErrOpen", err)
	}
	if _, err := c.Open(senderkey.NewReceiver(f.k1, f.alice.ID())); !errors.Is(err, ErrOpen) {
		t.Errorf("receiver of another epoch: got %v; want ErrOpen", err)
	}
	if _, err := OpenChain(f.commitE, OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrMalformed) {
		t.Errorf("OpenChain of a commit: got %v; want ErrMalformed", err)
	}
	if _, _, err := OpenCommit(good, OuterKey(f.k2), f.team); !errors.Is(err, ErrMalformed) {
		t.Errorf("OpenCommit of a chain: got %v; want ErrMalformed", err)
	}
	if _, _, err := OpenBox(good, f.bob, f.team); !errors.Is(err, ErrMalformed) {
		t.Errorf("OpenBox of a chain: got %v; want ErrMalformed", err)
	}
	if _, err := OpenChain(good, OuterKey(f.k1), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
		t.Errorf("wrong outer key: got %v; want ErrBadSeal", err)
	}
	if _, _, err := OpenCommit(f.commitE, OuterKey(f.k1), f.team); !errors.Is(err, ErrOpen) {
		t.Errorf("commit, wrong outer key: got %v; want ErrOpen", err)
	}
	if _, err := OpenChain(&Envelope{Ciphertext: make([]byte, MaxSize)}, OuterKey(f.k2), f.team, f.list()); !errors.Is(err, ErrTooLarge) {
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
	resealed := func(mut func(*crdt.Op)) *crdt.Op { c := f.commit.Clone(); mut(c); return c }
	badSig := resealed(func(o *crdt.Op) { o.Seal.Sig[5] ^= 1 })
	atIndex1 := resealed(func(o *crdt.Op) { o.Sign(f.alice, f.tag2(), 1, crdt.InnerHash{}) })
	atOtherEpoch := resealed(func(o *crdt.Op) { o.Sign(f.alice, f.tag1(), 0, crdt.InnerHash{}) })
	commitHdr := hdrOf(f.commit)
	msgHdr := hdrOf(f.msgA)
	sealedMsg := f.msgA.Clone()
	sealedMsg.Sign(f.alice, crdt.TagOf(f.msgA.ID()), 0, crdt.InnerHash{})
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
		{"signed under another domain", commitHdr.commit(t, f.k2, func(ad []byte) []byte {
			m := append([]byte("fieldmesh/v2/envelope/commit"), commitSigned(f.team, ad, priorOK)[len(commitDomain):]...)
			return append(append(f.alice.Sign(m), priorOK...), f.commit.Marshal()...)
		}), ErrBadOp},
		{"a message op in commit form", msgHdr.commit(t, f.k2, plainOf(f.alice, priorOK, sealedMsg)), ErrBadOp},
		{"prior key of its own tag", commitHdr.commit(t, f.k2, plainOf(f.alice, appendPrior(nil, []PriorKey{{Tag: f.tag2(), Outer: f.k1}}), f.commit)), ErrBadOp},
		{"prior keys not ascending", commitHdr.commit(t, f.k2, plainOf(f.alice, appendPrior(nil, []PriorKey{{Tag: 5, Outer: f.k1}, {Tag: 5, Outer: f.k1}}), f.commit)), ErrBadOp},
		{"prior count over what follows", commitHdr.commit(t, f.k2, plainOf(f.alice, []byte{3}, f.commit)), ErrBadOp},
		{"prior count over the limit", commitHdr.commit(t, f.k2, plainOf(f.alice, []byte{0x81, 0x04}, f.commit)), ErrBadOp},
		{"prior count not minimal", commitHdr.commit(t, f.k2, plainOf(f.alice, []byte{0x80, 0x00}, f.commit)), ErrBadOp},
		{"op with a bad seal", hdrOf(badSig).commit(t, f.k2, plainOf(f.alice, priorOK, badSig)), crdt.ErrBadSignature},
		{"op sealed at index 1", hdrOf(atIndex1).commit(t, f.k2, plainOf(f.alice, priorOK, atIndex1)), crdt.ErrBadSignature},
		{"op sealed at another epoch", hdrOf(atOtherEpoch).commit(t, f.k2, plainOf(f.alice, priorOK, atOtherEpoch)), crdt.ErrBadSignature},
		{"op without its seal", commitHdr.commit(t, f.k2, func(ad []byte) []byte {
			return append(append(sign(f.alice, ad, priorOK), priorOK...), f.commit.MarshalContent()...)
		}), ErrBadOp},
		{"garbage op", commitHdr.commit(t, f.k2, func(ad []byte) []byte {
			return append(append(sign(f.alice, ad, priorOK), priorOK...), "garbage"...)
		}), ErrBadOp},
	}
	for _, tt := range commitCases {
		k, _, err := OpenBox(tt.e, f.bob, f.team)
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
		if !errors.Is(err, tt.want) || !errors.Is(err, ErrBadOp) || op != nil || prior != nil {
			t.Errorf("%s: got %v, %v, %v; want nil, nil, ErrBadOp (%v)", tt.name, op, prior, err, tt.want)
		}
	}
}

// TestSenderSlot: the chain form names its sender by a slot in the epoch's
// recipient list; the seal signs the full device id and the slot (in the
// inner hash), so no list, however made, moves a genuine seal to another
// slot. A member claiming another member's slot
// (its own signature, another's slot), a genuine envelope re-sealed at
// another slot, a slot past the list, and an envelope opened with a wrong
// list are all ErrBadSeal; with no list the outer layer opens and the
// sender is not named (ErrNoList), so the caller holds the envelope.
func TestSenderSlot(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	outer := OuterKey(f.k2)
	e, _ := f.sealChain(t, f.msgA, 0)
	c, err := OpenChain(e, outer, f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	if c.Sender != f.alice.ID() || c.Slot != f.boxOf(f.alice) {
		t.Fatalf("genuine: sender %v at slot %d; want alice at %d", c.Sender.Short(), c.Slot, f.boxOf(f.alice))
	}
	bob := f.boxOf(f.bob)
	// bob signs alice's op's position under his own id, at his own slot:
	// the signature verifies (it is his), the inner layer is alice's and
	// does not open in his chain.
	own := f.sealedAt(f.bob, f.tag2(), f.bob.ID(), 0, f.msgA.ID(), e, c.inner)
	if got, err := OpenChain(wrapChain(e, outer, bob, 0, own, c.inner), outer, f.team, f.list()); err != nil || got.Sender != f.bob.ID() {
		t.Fatalf("bob at his own slot: got %v; want bob as the sender", err)
	} else if op, err := got.Open(senderkey.NewReceiver(f.k2, f.bob.ID())); !errors.Is(err, ErrOpen) || op != nil {
		t.Errorf("bob at his own slot: Open got %v; want ErrOpen", err)
	}
	for _, tt := range []struct {
		name string
		slot int
		sig  []byte
		list []identity.DeviceID
	}{
		{"a member claims alice's slot with his signature", c.Slot, own, f.list()},
		{"a member claims alice's slot with a signature over alice's id", c.Slot, f.sealedAt(f.bob, f.tag2(), f.alice.ID(), 0, f.msgA.ID(), e, c.inner), f.list()},
		{"alice's seal re-sealed at bob's slot", bob, c.Sig, f.list()},
		{"alice's seal at the slot past the list", len(f.recipients), c.Sig, f.list()},
		{"alice's seal at the last slot", MaxBoxes - 1, c.Sig, f.list()},
		{"the list of another epoch (alice alone)", 0, c.Sig, []identity.DeviceID{f.bob.ID()}},
		{"a list with alice's slot given to bob", c.Slot, c.Sig, slices.Repeat([]identity.DeviceID{f.bob.ID()}, len(f.recipients))},
		{"an empty list", c.Slot, c.Sig, []identity.DeviceID{}},
		// A member's commit ground to the epoch's tag can hand a device a
		// list of its making: alice's genuine envelope re-encrypted at
		// another slot that this list gives to alice. The slot is signed
		// (in the inner hash), so it does not verify.
		{"alice's seal at another slot that a crafted list gives to alice", bob, c.Sig, slices.Repeat([]identity.DeviceID{f.alice.ID()}, len(f.recipients))},
	} {
		got, err := OpenChain(wrapChain(e, outer, tt.slot, 0, tt.sig, c.inner), outer, f.team, tt.list)
		if !errors.Is(err, ErrBadSeal) || got != nil {
			t.Errorf("%s: got %v, %v; want nil, ErrBadSeal", tt.name, got, err)
		}
	}
	if got, err := OpenChain(e, outer, f.team, nil); !errors.Is(err, ErrNoList) || got != nil {
		t.Errorf("no list: got %v, %v; want nil, ErrNoList", got, err)
	}
	// Without the list nothing is authenticated (the outer layer has no
	// tag; the signature needs the sender's key): a wrong outer key reads
	// garbage, refused if it holds no slot, index and signature, held as
	// of an unknown epoch (ErrNoList) otherwise, and refused by the
	// signature once the list is known.
	if _, err := OpenChain(e, OuterKey(f.k1), f.team, nil); !errors.Is(err, ErrNoList) && !errors.Is(err, ErrBadSeal) {
		t.Errorf("no list, wrong outer key: got %v; want ErrNoList or ErrBadSeal", err)
	}
	if _, err := OpenChain(e, OuterKey(f.k1), f.team, f.list()); !errors.Is(err, ErrBadSeal) {
		t.Errorf("wrong outer key, with the list: got %v; want ErrBadSeal", err)
	}
}

// TestSwappedInnerLayer: a member holding the epoch's outer key (any
// member, or a device holding it as a prior key) takes a genuine envelope
// and puts another inner ciphertext under the sender's genuine slot, index
// and signature: another envelope's inner layer, or the genuine one with a
// bit flipped. A device holding only the outer key cannot open the inner
// layer, so it must refuse the envelope by the signature (which covers the
// inner ciphertext's hash), or it would keep and pass on a corrupt envelope
// as the sender's.
func TestSwappedInnerLayer(t *testing.T) {
	skipNoSeal(t)
	f := newFixture(t)
	e, _ := f.sealChain(t, f.msgA, 2)
	o, _ := f.sealChain(t, f.msgB, 3)
	outer := OuterKey(f.k2)
	c, err := OpenChain(e, outer, f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	co, err := OpenChain(o, outer, f.team, f.list())
	if err != nil {
		t.Fatal(err)
	}
	swaps := map[string][]byte{"another envelope's inner layer": co.inner}
	for _, i := range []int{0, len(c.inner) / 2, len(c.inner) - 1} {
		b := bytes.Clone(c.inner)
		b[i] ^= 0x01
		swaps[fmt.Sprintf("inner byte %d flipped", i)] = b
	}
	for name, inner := range swaps {
		got, err := OpenChain(wrapChain(e, outer, c.Slot, c.Index, c.Sig, inner), outer, f.team, f.list())
		if !errors.Is(err, ErrBadSeal) || got != nil {
			t.Errorf("%s under the genuine signature: got %v; want ErrBadSeal from the outer key alone", name, err)
		}
	}
}
