package teamkeys_test

// The benchmarks of issue #3 through the whole envelope path: seal and
// open of a 200-byte message in chain form (with the op's Ed25519
// signature and its verification), and a commit hand-over to a 30-device
// team (seal, and one recipient's open; and a non-recipient's), each
// reported as a ratio ("x-baseline") to a baseline measured in the same
// run: raw ChaCha20-Poly1305 of 200 bytes (the 29-byte header as associated data)
// plus one Ed25519 signature (seal side) or verification (open side). Each
// candidate times its baseline for 100 ms just before and just after its
// own loop and divides by their mean, so a change of load on a shared
// machine hits both sides of the ratio alike (as crypto/epochkey's
// benchmarks do).
//
// Every signature an open verifies is made where crdt's memo of verified
// seals (filled by Op.Sign and by each verification) has not seen it, so
// that the open pays for the verification: commit ops are sealed by hand
// (crdt.SignedBytes) instead of by crdt.NewOp, and the messages opened are
// sealed by Keys.Seal in another process (the test binary run again, see
// TestMain), whose wire bytes this one reads.
//
// Run: go test -run '^$' -bench . -benchtime 1s -count 3 ./sync/teamkeys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
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

// baselines: ChaCha20-Poly1305 (a fresh AEAD, the 29-byte header as associated data)
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

// sealFresh seals a create or commit op at its own epoch as crdt.NewOp
// does, but by hand (crdt.SignedBytes), so that crdt's memo of verified
// seals does not know it and opening it verifies the signature for real.
func sealFresh(dev *identity.Device, op *crdt.Op) *crdt.Op {
	id := op.ID()
	tag := crdt.TagOf(id)
	op.Seal = crdt.Seal{Epoch: tag, Index: 0, Sig: dev.Sign(crdt.SignedBytes(op.Team, tag, op.Author, 0, id, crdt.InnerHash{}))}
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
}

// benchClock makes every op time of the process, hence every op id, tag
// and seal, distinct: one made twice (by two runs of a benchmark function,
// or by this process and a seal helper) would be in crdt's memo of
// verified seals the second time it is opened. The seal helpers' ops take
// their times from helperClock's range, far from this one's.
var (
	benchClock  atomic.Int64
	helperClock atomic.Int64
)

const helperTimes = 1 << 36 // milliseconds: where the helpers' op times start

func newBenchTeam() (*benchTeam, error) {
	bt := &benchTeam{}
	var err error
	if bt.team, err = crdt.NewTeamID(detRand(4999)); err != nil {
		return nil, err
	}
	for i := range benchTeamSize + 1 {
		d, err := identity.Generate(detRand(uint64(5000 + i)))
		if err != nil {
			return nil, err
		}
		bt.devs = append(bt.devs, d)
	}
	bt.outsider, bt.devs = bt.devs[benchTeamSize], bt.devs[:benchTeamSize]
	slices.SortFunc(bt.devs, func(x, y *identity.Device) int { a, c := x.ID(), y.ID(); return bytes.Compare(a[:], c[:]) })
	bt.alice, bt.bob = bt.devs[0], bt.devs[benchTeamSize/2]
	return bt, nil
}

func mustBenchTeam(b *testing.B) *benchTeam {
	bt, err := newBenchTeam()
	if err != nil {
		b.Fatal(err)
	}
	return bt
}

func (bt *benchTeam) next() crdt.HLC {
	ms := benchClock.Add(1)
	return crdt.MakeHLC(time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(ms)*time.Millisecond), 0)
}

// commitOp is a re-key by alice to all 30 devices, sealed by crdt.NewOp,
// or, if fresh, by hand (so that opening it verifies for real).
func (bt *benchTeam) commitOp(fresh bool) *crdt.Op {
	rs := make([]crdt.Recipient, len(bt.devs))
	for i, d := range bt.devs {
		rs[i] = crdt.Recipient{Device: d.ID(), Noise: d.NoisePublic()}
	}
	body := crdt.Commit{Number: 2, Recipients: rs}.Marshal()
	if !fresh {
		return crdt.NewOp(bt.alice, bt.team, bt.next(), nil, crdt.KindMember, body)
	}
	return sealFresh(bt.alice, &crdt.Op{Team: bt.team, Author: bt.alice.ID(), Time: bt.next(), Kind: crdt.KindMember, Body: body})
}

// openCommit has dev take in a commit envelope from its wire bytes: its
// box (trial opening), OpenCommit (both signatures) and Learn (the
// derivation of the chains).
func (bt *benchTeam) openCommit(k *teamkeys.Keys, dev *identity.Device, wire []byte) error {
	e, err := envelope.Unmarshal(envelope.TopicOf(bt.team), wire)
	if err != nil {
		return err
	}
	box, err := teamkeys.OpenBox(teamkeys.StaticOnly(dev), bt.team, e)
	if err != nil {
		return err
	}
	c, err := k.OpenCommit(e, box)
	if err != nil {
		return err
	}
	return k.Learn(c)
}

func (bt *benchTeam) message() *crdt.Op {
	body := crdt.Message{Text: string(bytes.Repeat([]byte{'x'}, benchMsgSize))}.Marshal()
	return crdt.NewOp(bt.alice, bt.team, bt.next(), nil, crdt.KindMessage, body)
}

// sealHelperEnv, when set to "path,n,clock", makes the test binary
// (TestMain) seal an epoch's commit and n of alice's messages in it, with
// op times from clock on, write their wire bytes to path, and exit: BenchmarkMessage's open side runs it, so that
// the seals it opens were never signed or verified in its own process.
const sealHelperEnv = "FIELDMESH_TEAMKEYS_BENCH_SEAL"

func TestMain(m *testing.M) {
	if spec := os.Getenv(sealHelperEnv); spec != "" {
		if err := sealHelper(spec); err != nil {
			fmt.Fprintln(os.Stderr, "seal helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sealHelper writes, as uvarint-length-prefixed records, the commit
// envelope of a new epoch by alice to the bench team and n message
// envelopes of alice in it.
func sealHelper(spec string) error {
	f := strings.Split(spec, ",")
	if len(f) != 3 {
		return fmt.Errorf("bad spec %q", spec)
	}
	path := f[0]
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return err
	}
	clock, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return err
	}
	benchClock.Store(clock)
	bt, err := newBenchTeam()
	if err != nil {
		return err
	}
	ka := teamkeys.New(bt.team, bt.alice)
	op := bt.commitOp(false)
	e, err := ka.SealCommit(op, nil, nil, nil)
	if err != nil {
		return err
	}
	var out []byte
	put := func(b []byte) { out = binary.AppendUvarint(out, uint64(len(b))); out = append(out, b...) }
	put(e.Marshal())
	for range n {
		m, _, err := ka.Seal(bt.message(), op.ID())
		if err != nil {
			return err
		}
		put(m.Marshal())
	}
	return os.WriteFile(path, out, 0o600)
}

// sealElsewhere runs sealHelper in another process and returns its
// records: the commit envelope, then n messages.
func sealElsewhere(b *testing.B, n int) [][]byte {
	b.Helper()
	path := filepath.Join(b.TempDir(), "wire")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	clock := helperTimes + helperClock.Add(int64(n+2)) - int64(n+2)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", sealHelperEnv, path, n, clock))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("seal helper: %v: %s", err, out)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var recs [][]byte
	for len(raw) > 0 {
		l, k := binary.Uvarint(raw)
		if k <= 0 || uint64(len(raw)-k) < l {
			b.Fatalf("seal helper: a bad record")
		}
		recs = append(recs, raw[k:k+int(l)])
		raw = raw[k+int(l):]
	}
	if len(recs) != n+1 {
		b.Fatalf("seal helper: %d records; want %d", len(recs), n+1)
	}
	return recs
}

// BenchmarkMessage: Keys.Seal of a 200-byte message (with its signature,
// Op.Sign; Marshal included), and OpenChain and Consume of one (from the
// wire bytes: Unmarshal, the outer layer, the verification of the seal,
// the inner layer).
func BenchmarkMessage(b *testing.B) {
	skipNoSeal(b)
	sealSign, openVerify := baselines()
	sealSign.run(b)
	openVerify.run(b)
	bt := mustBenchTeam(b)
	b.Run("seal+sign-200B", func(b *testing.B) {
		ka := teamkeys.New(bt.team, bt.alice)
		op := bt.commitOp(false)
		if _, err := ka.SealCommit(op, nil, nil, nil); err != nil {
			b.Fatal(err)
		}
		commit := op.ID() // the epoch's id, known to the sender: not part of a seal
		r := newRatio(sealSign)
		b.ReportAllocs()
		var size int
		for b.Loop() {
			e, _, err := ka.Seal(bt.message(), commit)
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
		recs := sealElsewhere(b, b.N)
		kb := teamkeys.New(bt.team, bt.bob)
		if err := bt.openCommit(kb, bt.bob, recs[0]); err != nil {
			b.Fatal(err)
		}
		r := newRatio(openVerify)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			e, err := envelope.Unmarshal(envelope.TopicOf(bt.team), recs[1+i])
			if err != nil {
				b.Fatal(err)
			}
			o, err := kb.OpenChain(e)
			if err != nil {
				b.Fatal(err)
			}
			if err := kb.Consume(o); err != nil {
				b.Fatal(err)
			}
		}
		r.report(b)
	})
}

// BenchmarkCommit: Keys.SealCommit of a re-key to a 30-device team (with
// the op's seal by crdt.NewOp; Marshal included), and the opening of one
// by a recipient (from the wire bytes: OpenBox's trial opening, OpenCommit
// with both signatures, Learn with the derivation of 30 chains) and by a
// device that is not a recipient (OpenBox tries every box).
func BenchmarkCommit(b *testing.B) {
	skipNoSeal(b)
	sealSign, openVerify := baselines()
	sealSign.run(b)
	openVerify.run(b)
	bt := mustBenchTeam(b)
	b.Run("seal-30", func(b *testing.B) {
		r := newRatio(sealSign)
		b.ReportAllocs()
		var size int
		for b.Loop() {
			// A fresh Keys each time: one epoch, no prior keys.
			e, err := teamkeys.New(bt.team, bt.alice).SealCommit(bt.commitOp(false), nil, nil, nil)
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
				e, err := teamkeys.New(bt.team, bt.alice).SealCommit(bt.commitOp(true), nil, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				wire[i] = e.Marshal()
			}
			r := newRatio(openVerify)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				err := bt.openCommit(teamkeys.New(bt.team, dev), dev, wire[i])
				if who == "recipient" && err != nil || who != "recipient" && !errors.Is(err, envelope.ErrNotRecipient) {
					b.Fatal(err)
				}
			}
			r.report(b)
		})
	}
}
