package teamkeys_test

// The benchmarks of issue #3 through the whole envelope path: seal and
// open of a 200-byte message in chain form (with the op's Ed25519
// signature and its verification), and a commit hand-over to a 30-device
// team (seal, and one recipient's open; and a non-recipient's), each
// reported as a ratio ("x-baseline") to a baseline measured in the same
// run: raw ChaCha20-Poly1305 of 200 bytes (61 bytes of associated data)
// plus one Ed25519 signature (seal side) or verification (open side). Each
// candidate times its baseline for 100 ms just before and just after its
// own loop and divides by their mean, so a change of load on a shared
// machine hits both sides of the ratio alike (as crypto/epochkey's
// benchmarks do).
//
// Opened ops are signed outside crdt.NewOp, so that crdt's memo of
// verified op ids (which NewOp fills) does not skip the verification.
//
// Run: go test -run '^$' -bench . -benchtime 1s -count 3 ./sync/teamkeys

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
	"golang.org/x/crypto/chacha20poly1305"
)

const (
	benchMsgSize  = 200
	benchTeamSize = 30
)

var sinkBytes []byte

// baseline is one reference operation, reported as a sub-benchmark and
// re-timed around each candidate.
type baseline struct {
	name string
	op   func()
}

func (bl *baseline) run(b *testing.B) {
	b.Run("baseline/"+bl.name, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			bl.op()
		}
	})
}

// sample times the operation for at least 100 ms and 10 runs; ns/op.
func (bl *baseline) sample() float64 {
	start, n := time.Now(), 0
	for ; n < 10 || time.Since(start) < 100*time.Millisecond; n++ {
		bl.op()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

type ratio struct {
	bl     *baseline
	before float64
}

func newRatio(bl *baseline) *ratio { return &ratio{bl: bl, before: bl.sample()} }

// report adds the candidate's ns/op over the mean of the baseline before
// and after ("x-baseline"), and that mean ("baseline-ns/op").
func (r *ratio) report(b *testing.B) {
	b.Helper()
	if b.N == 0 {
		return
	}
	b.StopTimer()
	base := (r.before + r.bl.sample()) / 2
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-baseline")
	b.ReportMetric(base, "baseline-ns/op")
}

// baselines: ChaCha20-Poly1305 (a fresh AEAD, 61 bytes of associated data)
// of 200 bytes with one Ed25519 signature (seal) or verification (open) of
// them.
func baselines() (sealSign, openVerify *baseline) {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 1
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	key := make([]byte, chacha20poly1305.KeySize)
	nonce := make([]byte, chacha20poly1305.NonceSize)
	ad := make([]byte, envelope.HeaderSize)
	msg := bytes.Repeat([]byte{'m'}, benchMsgSize)
	sig := ed25519.Sign(priv, msg)
	aead0, _ := chacha20poly1305.New(key)
	ct := aead0.Seal(nil, nonce, msg, ad)
	sealSign = &baseline{name: "chacha20poly1305-200B+ed25519-sign", op: func() {
		s := ed25519.Sign(priv, msg)
		aead, _ := chacha20poly1305.New(key)
		sinkBytes = append(aead.Seal(make([]byte, 0, len(msg)+16), nonce, msg, ad), s[0])
	}}
	openVerify = &baseline{name: "chacha20poly1305-200B+ed25519-verify", op: func() {
		aead, _ := chacha20poly1305.New(key)
		pt, err := aead.Open(make([]byte, 0, len(ct)), nonce, ct, ad)
		if err != nil || !ed25519.Verify(pub, pt, sig) {
			panic("baseline: open or verify failed")
		}
		sinkBytes = pt
	}}
	return
}

// signFresh signs op as crdt.NewOp does ("fieldmesh/op/v1" and the
// encoding without the signature) but without NewOp's memo, so that
// opening it verifies the signature for real.
func signFresh(dev *identity.Device, op *crdt.Op) *crdt.Op {
	op.Sig = nil
	m := op.Marshal() // ends with the zero length of the empty signature
	op.Sig = dev.Sign(append([]byte("fieldmesh/op/v1"), m[:len(m)-1]...))
	return op
}

// benchTeam is a 30-device team; alice (devs[0]) commits epochs to all of
// them, bob (devs[15], in the middle of the recipient list, so his trial
// opening costs the average) receives.
type benchTeam struct {
	team       crdt.TeamID
	devs       []*identity.Device // sorted by id
	alice, bob *identity.Device
	outsider   *identity.Device
	seq        int // makes op times, hence ids and tags, distinct
}

func newBenchTeam(b *testing.B) *benchTeam {
	bt := &benchTeam{}
	var err error
	if bt.team, err = crdt.NewTeamID(detRand(4999)); err != nil {
		b.Fatal(err)
	}
	for i := range benchTeamSize + 1 {
		d, err := identity.Generate(detRand(uint64(5000 + i)))
		if err != nil {
			b.Fatal(err)
		}
		bt.devs = append(bt.devs, d)
	}
	bt.outsider, bt.devs = bt.devs[benchTeamSize], bt.devs[:benchTeamSize]
	slices.SortFunc(bt.devs, func(x, y *identity.Device) int { a, c := x.ID(), y.ID(); return bytes.Compare(a[:], c[:]) })
	bt.alice, bt.bob = bt.devs[0], bt.devs[benchTeamSize/2]
	return bt
}

func (bt *benchTeam) next() crdt.HLC {
	bt.seq++
	return crdt.MakeHLC(time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(bt.seq)*time.Millisecond), 0)
}

// commitOp is a re-key by alice to all 30 devices, signed by crdt.NewOp,
// or, if fresh, outside it (so that opening it verifies for real).
func (bt *benchTeam) commitOp(fresh bool) *crdt.Op {
	rs := make([]crdt.Recipient, len(bt.devs))
	for i, d := range bt.devs {
		rs[i] = crdt.Recipient{Device: d.ID(), Noise: d.NoisePublic()}
	}
	body := crdt.Commit{Number: 2, Recipients: rs}.Marshal()
	if !fresh {
		return crdt.NewOp(bt.alice, bt.team, bt.next(), nil, crdt.KindMember, body)
	}
	return signFresh(bt.alice, &crdt.Op{Team: bt.team, Author: bt.alice.ID(), Time: bt.next(), Kind: crdt.KindMember, Body: body})
}

// epoch starts a new epoch learned by alice and bob, and returns their Keys.
func (bt *benchTeam) epoch(b *testing.B) (ka, kb *teamkeys.Keys, tag uint32) {
	ka, kb = teamkeys.New(bt.team, bt.alice), teamkeys.New(bt.team, bt.bob)
	e, err := ka.SealCommit(bt.commitOp(false), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := kb.Open(e); err != nil {
		b.Fatal(err)
	}
	return ka, kb, e.Epoch
}

func (bt *benchTeam) message(fresh bool) *crdt.Op {
	body := crdt.Message{Text: string(bytes.Repeat([]byte{'x'}, benchMsgSize))}.Marshal()
	if !fresh {
		return crdt.NewOp(bt.alice, bt.team, bt.next(), nil, crdt.KindMessage, body)
	}
	return signFresh(bt.alice, &crdt.Op{Team: bt.team, Author: bt.alice.ID(), Time: bt.next(), Kind: crdt.KindMessage, Body: body})
}

// BenchmarkMessage: Keys.Seal of a 200-byte message (signed by
// crdt.NewOp; Marshal included) and Keys.Open of it (from the wire bytes:
// Unmarshal, both layers, the verification of the op's signature).
func BenchmarkMessage(b *testing.B) {
	skipNoSeal(b)
	sealSign, openVerify := baselines()
	sealSign.run(b)
	openVerify.run(b)
	bt := newBenchTeam(b)
	b.Run("seal+sign-200B", func(b *testing.B) {
		ka, _, tag := bt.epoch(b)
		r := newRatio(sealSign)
		b.ReportAllocs()
		var size int
		for b.Loop() {
			e, err := ka.Seal(bt.message(false), tag)
			if err != nil {
				b.Fatal(err)
			}
			sinkBytes = e.Marshal()
			size = len(sinkBytes)
		}
		r.report(b)
		b.ReportMetric(float64(size), "B/envelope")
	})
	b.Run("open+verify-200B", func(b *testing.B) {
		ka, kb, tag := bt.epoch(b)
		wire := make([][]byte, b.N)
		for i := range wire {
			e, err := ka.Seal(bt.message(true), tag)
			if err != nil {
				b.Fatal(err)
			}
			wire[i] = e.Marshal()
		}
		r := newRatio(openVerify)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			e, err := envelope.Unmarshal(wire[i])
			if err != nil {
				b.Fatal(err)
			}
			if _, err := kb.Open(e); err != nil {
				b.Fatal(err)
			}
		}
		r.report(b)
	})
}

// BenchmarkCommit: Keys.SealCommit of a re-key to a 30-device team (with
// the op's signature by crdt.NewOp; Marshal included), and Keys.Open of it
// by one recipient (from the wire bytes; trial opening, both signatures,
// the derivation of 30 chains) and by a device that is not a recipient.
func BenchmarkCommit(b *testing.B) {
	skipNoSeal(b)
	sealSign, openVerify := baselines()
	sealSign.run(b)
	openVerify.run(b)
	bt := newBenchTeam(b)
	b.Run("seal-30", func(b *testing.B) {
		r := newRatio(sealSign)
		b.ReportAllocs()
		var size int
		for b.Loop() {
			// A fresh Keys each time: one epoch, no prior keys.
			e, err := teamkeys.New(bt.team, bt.alice).SealCommit(bt.commitOp(false), nil)
			if err != nil {
				b.Fatal(err)
			}
			sinkBytes = e.Marshal()
			size = len(sinkBytes)
		}
		r.report(b)
		b.ReportMetric(float64(size), "B/envelope")
	})
	for _, who := range []string{"recipient", "non-recipient"} {
		b.Run("open-30/"+who, func(b *testing.B) {
			dev := bt.bob
			if who == "non-recipient" {
				dev = bt.outsider
			}
			wire := make([][]byte, b.N)
			for i := range wire {
				e, err := teamkeys.New(bt.team, bt.alice).SealCommit(bt.commitOp(true), nil)
				if err != nil {
					b.Fatal(err)
				}
				wire[i] = e.Marshal()
			}
			r := newRatio(openVerify)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				e, err := envelope.Unmarshal(wire[i])
				if err != nil {
					b.Fatal(err)
				}
				_, err = teamkeys.New(bt.team, dev).Open(e)
				if who == "recipient" && err != nil || who != "recipient" && !errors.Is(err, teamkeys.ErrUnknownEpoch) {
					b.Fatal(err)
				}
			}
			r.report(b)
		})
	}
}
