package node

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/sync/adversary"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// openVerify is the baseline of BenchmarkJunkBoxes: opening a 200-byte message with raw
// ChaCha20-Poly1305 (61 bytes of associated data) and verifying one Ed25519 signature, what an
// ordinary message costs a device.
func openVerify() func() {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	key := make([]byte, chacha20poly1305.KeySize)
	nonce := make([]byte, chacha20poly1305.NonceSize)
	ad := make([]byte, envelope.HeaderSize)
	msg := bytes.Repeat([]byte{'m'}, 200)
	sig := ed25519.Sign(priv, msg)
	a, _ := chacha20poly1305.New(key)
	ct := a.Seal(nil, nonce, msg, ad)
	return func() {
		aead, _ := chacha20poly1305.New(key)
		pt, err := aead.Open(nil, nonce, ct, ad)
		if err != nil || !ed25519.Verify(pub, pt, sig) {
			panic("baseline failed")
		}
	}
}

// nsPerOp times f for at least 100 ms and 10 runs.
func nsPerOp(f func()) float64 {
	start, n := time.Now(), 0
	for ; n < 10 || time.Since(start) < 100*time.Millisecond; n++ {
		f()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// BenchmarkJunkBoxes measures what a commit envelope of 256 junk boxes costs the node that receives
// it (receive: decode, the core's judgement, the store), as a ratio ("x-baseline") to opening and
// verifying an ordinary 200-byte message, timed before and after in the same run; it also reports the
// X25519 multiplications spent per envelope ("boxes/op"):
//
//   - outsider: from a peer that is not a member: refused before any cryptography;
//   - member: from a member within its budget: every box is tried (the node's clock moves ten
//     minutes between envelopes, so the budget refills);
//   - member-over-budget: from a member whose budget is spent: nothing is tried.
func BenchmarkJunkBoxes(b *testing.B) {
	base := openVerify()
	var clock atomic.Int64
	start := time.Now()
	_, ns := newMockNodesCfg(b, func(_ int, c *Config) {
		c.Now = func() time.Time { return start.Add(time.Duration(clock.Load())) }
		c.EpochCheck, c.AckInterval = time.Hour, -1
	}, "Admin", "Mal", "Outsider")
	a, mal, out := ns[0], ns[1], ns[2]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		b.Fatal(err)
	}
	joinAll(b, a, team.ID.String(), mal)
	ta, _ := a.teamByRef(team.ID.String())
	for _, c := range []struct {
		name   string
		from   *testNode
		refill bool
	}{{"outsider", out, false}, {"member", mal, true}, {"member-over-budget", mal, false}} {
		b.Run(c.name, func(b *testing.B) {
			before := nsPerOp(base)
			var boxes int64
			for b.Loop() {
				b.StopTimer()
				junk, err := adversary.JunkCommit(c.from.id.Device, ta.id, crdt.MakeHLC(time.Now(), 0), 256, rand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				if c.refill {
					clock.Add(int64(10 * time.Minute))
				}
				_, tried0 := epochkey.TrialCount()
				b.StartTimer()
				vs, err := a.receive(ta, c.from.host.ID(), [][]byte{junk})
				b.StopTimer()
				if err != nil || vs[0] == device.Accepted {
					b.Fatalf("junk: %v %v", vs, err)
				}
				_, tried := epochkey.TrialCount()
				boxes += int64(tried - tried0)
				b.StartTimer()
			}
			b.StopTimer()
			mean := (before + nsPerOp(base)) / 2
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/mean, "x-baseline")
			b.ReportMetric(mean, "baseline-ns/op")
			b.ReportMetric(float64(boxes)/float64(b.N), "boxes/op")
		})
	}
}
