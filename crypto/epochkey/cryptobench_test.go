package epochkey

// The benchmarks of issue #3: seal and open of a 200-byte message with
// sender keys, and an epoch hand-over to a 30-device team, each reported as
// a ratio ("x-baseline") to raw ChaCha20-Poly1305 plus one Ed25519
// signature (seal) or verification (open), measured in the same run: each
// top-level benchmark first reports its baselines as sub-benchmarks, and
// each candidate times its baseline again for 100 ms just before and just
// after its own loop and reports its ratio to their mean. They live here, in the
// package test of epochkey, because they need its unexported cipher-suite
// seam to compare X25519 implementations and hashes; senderkey does not
// import epochkey, so this test may import both.
//
// Run: go test -run '^$' -bench . -benchtime 1s -count 3 ./crypto/epochkey

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

const (
	benchMsgSize  = 200 // bytes of message, signed then sealed with its 64-byte signature
	benchADSize   = 61  // bytes of associated data: an envelope header
	benchTeamSize = 30  // devices in the hand-over
)

type benchFixture struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	key  []byte
	msg  []byte
	ad   []byte
}

func newBenchFixture(b *testing.B) benchFixture {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 1
	priv := ed25519.NewKeyFromSeed(seed)
	f := benchFixture{
		priv: priv,
		pub:  priv.Public().(ed25519.PublicKey),
		key:  make([]byte, chacha20poly1305.KeySize),
		msg:  make([]byte, benchMsgSize),
		ad:   make([]byte, benchADSize),
	}
	for i := range f.msg {
		f.msg[i] = byte(i)
	}
	return f
}

// signed returns msg || Ed25519(msg): what is sealed.
func (f benchFixture) signed() []byte {
	return append(append(make([]byte, 0, benchMsgSize+ed25519.SignatureSize), f.msg...), ed25519.Sign(f.priv, f.msg)...)
}

var sinkBytes []byte

// benchNonce is the nonce given to senderkey's Seal and Open. Every message
// key is used once, so a fixed nonce is sound here; fieldmesh derives it
// from the op id (sync/envelope), which costs nothing measured here.
var benchNonce [senderkey.NonceSize]byte

// baseline is one reference operation. run reports it as a sub-benchmark
// of its own (its figure in the output); ratio hand-times it again right
// before and right after a candidate's loop, so that a change of load on a
// shared machine hits both sides of the ratio alike. (testing.Benchmark
// cannot be called from inside a benchmark: it waits for the lock the
// running benchmark holds.)
type baseline struct {
	name string
	op   func() // one operation
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

// ratio measures bl before a candidate's loop; call report after it.
type ratio struct {
	bl     *baseline
	unit   string
	before float64
}

func newRatio(bl *baseline, unit string) *ratio {
	return &ratio{bl: bl, unit: unit, before: bl.sample()}
}

// report adds the candidate's ns/op divided by the mean of the baseline
// before and after, and that mean ("baseline-ns/op").
func (r *ratio) report(b *testing.B) {
	b.Helper()
	if b.N == 0 {
		return
	}
	b.StopTimer()
	base := (r.before + r.bl.sample()) / 2
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, r.unit)
	b.ReportMetric(base, "baseline-ns/op")
}

// messageBaselines: ChaCha20-Poly1305 (a fresh AEAD, a fixed nonce, 61 bytes
// of associated data) of the 200-byte message and its signature, with one
// Ed25519 signature (seal) or verification (open); and the AEAD alone.
func messageBaselines(f benchFixture) (sealSign, openVerify, aeadSeal, aeadOpen *baseline) {
	nonce := make([]byte, chacha20poly1305.NonceSize)
	seal := func(pt []byte) []byte {
		aead, _ := chacha20poly1305.New(f.key)
		return aead.Seal(make([]byte, 0, len(pt)+chacha20poly1305.Overhead), nonce, pt, f.ad)
	}
	open := func(ct []byte) []byte {
		aead, _ := chacha20poly1305.New(f.key)
		pt, err := aead.Open(make([]byte, 0, len(ct)), nonce, ct, f.ad)
		if err != nil {
			panic("baseline: open failed")
		}
		return pt
	}
	signed := f.signed()
	ct := seal(signed)
	sealSign = &baseline{name: "chacha20poly1305+ed25519-sign", op: func() {
		sig := ed25519.Sign(f.priv, f.msg)
		sinkBytes = seal(append(append(make([]byte, 0, benchMsgSize+ed25519.SignatureSize), f.msg...), sig...))
	}}
	openVerify = &baseline{name: "chacha20poly1305+ed25519-verify", op: func() {
		pt := open(ct)
		if !ed25519.Verify(f.pub, pt[:benchMsgSize], pt[benchMsgSize:]) {
			panic("baseline: verify failed")
		}
		sinkBytes = pt
	}}
	aeadSeal = &baseline{name: "chacha20poly1305-seal-264B", op: func() { sinkBytes = seal(signed) }}
	aeadOpen = &baseline{name: "chacha20poly1305-open-264B", op: func() { sinkBytes = open(ct) }}
	return
}

// BenchmarkMessage: sender-key Seal and Open of a 200-byte message with its
// Ed25519 signature inside (sign then Seal; Open then verify), as ratios
// ("x-baseline") to raw ChaCha20-Poly1305 plus the same signature or
// verification; and the sender-key AEAD step alone as a ratio ("x-aead") to
// raw ChaCha20-Poly1305 of the same 264 bytes.
func BenchmarkMessage(b *testing.B) {
	f := newBenchFixture(b)
	ek := epochKey(b, 1)
	var self identity.DeviceID
	self[0] = 1
	sealSign, openVerify, aeadSeal, aeadOpen := messageBaselines(f)
	sealSign.run(b)
	openVerify.run(b)
	aeadSeal.run(b)
	aeadOpen.run(b)

	b.Run("senderkey/seal+sign-200B", func(b *testing.B) {
		s := senderkey.NewSender(ek, self)
		r := newRatio(sealSign, "x-baseline")
		b.ReportAllocs()
		for b.Loop() {
			sig := ed25519.Sign(f.priv, f.msg)
			_, ct, err := s.Seal(benchNonce, f.ad, append(append(make([]byte, 0, benchMsgSize+ed25519.SignatureSize), f.msg...), sig...))
			if err != nil {
				b.Fatal(err)
			}
			sinkBytes = ct
		}
		r.report(b)
	})
	b.Run("senderkey/open+verify-200B", func(b *testing.B) {
		cts := sealMany(b, ek, self, f, b.N)
		r := senderkey.NewReceiver(ek, self)
		ra := newRatio(openVerify, "x-baseline")
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			pt, err := r.Open(uint32(i), benchNonce, f.ad, cts[i])
			if err != nil || !ed25519.Verify(f.pub, pt[:benchMsgSize], pt[benchMsgSize:]) {
				b.Fatalf("open %d: %v", i, err)
			}
			sinkBytes = pt
		}
		ra.report(b)
	})
	b.Run("senderkey/seal-264B", func(b *testing.B) {
		s := senderkey.NewSender(ek, self)
		pt := f.signed()
		r := newRatio(aeadSeal, "x-aead")
		b.ReportAllocs()
		for b.Loop() {
			_, sinkBytes, _ = s.Seal(benchNonce, f.ad, pt)
		}
		r.report(b)
	})
	b.Run("senderkey/open-264B", func(b *testing.B) {
		cts := sealMany(b, ek, self, f, b.N)
		r := senderkey.NewReceiver(ek, self)
		ra := newRatio(aeadOpen, "x-aead")
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			var err error
			if sinkBytes, err = r.Open(uint32(i), benchNonce, f.ad, cts[i]); err != nil {
				b.Fatal(err)
			}
		}
		ra.report(b)
	})
}

// sealMany seals n signed messages from self's chain, for the open benchmarks.
func sealMany(b *testing.B, ek seal.EpochKey, self identity.DeviceID, f benchFixture, n int) [][]byte {
	b.Helper()
	s := senderkey.NewSender(ek, self)
	pt := f.signed()
	cts := make([][]byte, n)
	for i := range cts {
		_, ct, err := s.Seal(benchNonce, f.ad, pt)
		if err != nil {
			b.Fatal(err)
		}
		cts[i] = ct
	}
	return cts
}

// The X25519 variants compared: keyed (what the package uses: crypto/ecdh
// keeping the *ecdh.PrivateKey of the static and ephemeral keys), ecdh
// (identity.DH25519: crypto/ecdh from private-key bytes at every DH) and
// noise-dh (flynn/noise's noise.DH25519, via golang.org/x/crypto/curve25519).
var (
	benchSuites = []struct {
		name  string
		suite suiteFor
	}{
		{"keyed", defaultSuite},
		{"ecdh", fixedSuite(noise.NewCipherSuite(identity.DH25519, noise.CipherChaChaPoly, noise.HashSHA256))},
		{"noise-dh", fixedSuite(noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256))},
	}
	sinkHandover *Handover
)

// BenchmarkHandover: NewHandover of an epoch key to a 30-device team and
// Handover.Open by one of them, with each X25519 variant.
func BenchmarkHandover(b *testing.B) {
	sealSign, openVerify, _, _ := messageBaselines(newBenchFixture(b))
	sealSign.run(b)
	openVerify.run(b)
	f := newTeamFixture(b, benchTeamSize)
	for _, s := range benchSuites {
		b.Run("new-30/"+s.name, func(b *testing.B) {
			r := newRatio(sealSign, "x-baseline")
			b.ReportAllocs()
			for b.Loop() {
				h, err := newHandover(s.suite, f.sender, f.team, f.epoch, f.key, f.publics(), nil)
				if err != nil {
					b.Fatal(err)
				}
				sinkHandover = h
			}
			r.report(b)
			enc, _ := sinkHandover.MarshalBinary()
			b.ReportMetric(float64(len(enc)), "B/handover")
		})
	}
	h := f.handover(b)
	for _, s := range benchSuites {
		b.Run("open/"+s.name, func(b *testing.B) {
			dev := f.members[benchTeamSize/2]
			r := newRatio(openVerify, "x-baseline")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h.open(s.suite, dev, f.sender.NoisePublic()); err != nil {
					b.Fatal(err)
				}
			}
			r.report(b)
		})
	}
	b.Run("unmarshal+open", func(b *testing.B) {
		enc, _ := h.MarshalBinary()
		dev := f.members[benchTeamSize/2]
		r := newRatio(openVerify, "x-baseline")
		for b.Loop() {
			h2, err := UnmarshalHandover(enc)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := h2.Open(dev, f.sender.NoisePublic()); err != nil {
				b.Fatal(err)
			}
		}
		r.report(b)
	})
}

// BenchmarkHandoverHash compares the Noise hash: SHA-256 (used) and BLAKE2s.
func BenchmarkHandoverHash(b *testing.B) {
	f := newTeamFixture(b, benchTeamSize)
	blake := func(static noise.DHKey) (noise.CipherSuite, func(), error) {
		dh, err := newKeyedDH(static.Private)
		if err != nil {
			return nil, nil, err
		}
		return noise.NewCipherSuite(dh, noise.CipherChaChaPoly, noise.HashBLAKE2s), dh.wipe, nil
	}
	for _, s := range []struct {
		name  string
		suite suiteFor
	}{{"sha256", defaultSuite}, {"blake2s", blake}} {
		b.Run("new-30/"+s.name, func(b *testing.B) {
			for b.Loop() {
				h, err := newHandover(s.suite, f.sender, f.team, f.epoch, f.key, f.publics(), nil)
				if err != nil {
					b.Fatal(err)
				}
				sinkHandover = h
			}
		})
		h, err := newHandover(s.suite, f.sender, f.team, f.epoch, f.key, f.publics(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("open/"+s.name, func(b *testing.B) {
			dev := f.members[1]
			for b.Loop() {
				if _, err := h.open(s.suite, dev, f.sender.NoisePublic()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDH isolates the X25519 operations of a box: ephemeral key
// generation and one DH with a static key, per variant.
func BenchmarkDH(b *testing.B) {
	static, err := identity.DH25519.GenerateKeypair(nil)
	if err != nil {
		b.Fatal(err)
	}
	peer, _ := identity.DH25519.GenerateKeypair(nil)
	keyed, err := newKeyedDH(static.Private)
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name string
		dh   noise.DHFunc
	}{{"keyed", keyed}, {"ecdh", identity.DH25519}, {"noise-dh", noise.DH25519}} {
		b.Run(v.name+"/GenerateKeypair", func(b *testing.B) {
			for b.Loop() {
				if _, err := v.dh.GenerateKeypair(nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(v.name+"/DH", func(b *testing.B) {
			for b.Loop() {
				if _, err := v.dh.DH(static.Private, peer.Public); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
