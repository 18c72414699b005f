package identity

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/flynn/noise"
)

func TestDH25519Interop(t *testing.T) {
	if got, want := DH25519.DHName(), noise.DH25519.DHName(); got != want {
		t.Errorf("DHName: got %q; want %q", got, want)
	}
	if got, want := DH25519.DHLen(), 32; got != want {
		t.Errorf("DHLen: got %d; want %d", got, want)
	}
	for seed := byte(0); seed < 8; seed++ {
		// Same reader => same keypair in both implementations.
		ours, err := DH25519.GenerateKeypair(detRand(seed))
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := noise.DH25519.GenerateKeypair(detRand(seed))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours.Private, theirs.Private) || !bytes.Equal(ours.Public, theirs.Public) {
			t.Fatalf("seed %d: keypair: got %x; want %x", seed, ours.Public, theirs.Public)
		}
		peer, err := noise.DH25519.GenerateKeypair(detRand(seed + 100))
		if err != nil {
			t.Fatal(err)
		}
		got, err := DH25519.DH(ours.Private, peer.Public)
		if err != nil {
			t.Fatal(err)
		}
		want, err := noise.DH25519.DH(theirs.Private, peer.Public)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("seed %d: DH: got %x; want %x", seed, got, want)
		}
		// And symmetric across implementations.
		back, err := noise.DH25519.DH(peer.Private, ours.Public)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, back) {
			t.Errorf("seed %d: DH symmetric: got %x; want %x", seed, back, got)
		}
	}
}

// TestDH25519KnownAnswer checks RFC 7748 section 6.1.
func TestDH25519KnownAnswer(t *testing.T) {
	alicePriv := unhex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	bobPub := unhex(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	want := unhex(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
	got, err := DH25519.DH(alicePriv, bobPub)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("DH: got %x, %v; want %x, nil", got, err, want)
	}
}

func TestDH25519Errors(t *testing.T) {
	k, err := DH25519.GenerateKeypair(detRand(1))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		priv, pub []byte
	}{
		{"short private", k.Private[:31], k.Public},
		{"short public", k.Private, k.Public[:31]},
		{"low-order public (zero)", k.Private, make([]byte, 32)},
		{"low-order public (one)", k.Private, append([]byte{1}, make([]byte, 31)...)},
	}
	for _, tt := range tests {
		if _, err := DH25519.DH(tt.priv, tt.pub); err == nil {
			t.Errorf("%s: got nil error; want error", tt.name)
		}
	}
	if _, err := DH25519.GenerateKeypair(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Errorf("GenerateKeypair(short reader): got nil error; want error")
	}
	if _, err := DH25519.GenerateKeypair(nil); err != nil {
		t.Errorf("GenerateKeypair(nil): got %v; want nil", err)
	}
}

// TestNoiseHandshake runs a full flynn/noise XX handshake and a transport
// message where one side uses DH25519 and the other noise.DH25519, and a
// one-way X message (the epoch-key delivery pattern) with device keys.
func TestNoiseHandshake(t *testing.T) {
	ours := noise.NewCipherSuite(DH25519, noise.CipherChaChaPoly, noise.HashSHA256)
	theirs := noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256)
	alice, bob := mustGenerate(t, 10), mustGenerate(t, 11)

	t.Run("XX", func(t *testing.T) {
		init, err := noise.NewHandshakeState(noise.Config{
			CipherSuite: ours, Random: detRand(20), Pattern: noise.HandshakeXX,
			Initiator: true, StaticKeypair: alice.NoiseKey(), Prologue: []byte("fieldmesh test"),
		})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := noise.NewHandshakeState(noise.Config{
			CipherSuite: theirs, Random: detRand(21), Pattern: noise.HandshakeXX,
			StaticKeypair: bob.NoiseKey(), Prologue: []byte("fieldmesh test"),
		})
		if err != nil {
			t.Fatal(err)
		}
		// -> e
		msg, _, _, err := init.WriteMessage(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := resp.ReadMessage(nil, msg); err != nil {
			t.Fatal(err)
		}
		// <- e, ee, s, es
		msg, _, _, err = resp.WriteMessage(nil, []byte("hi alice"))
		if err != nil {
			t.Fatal(err)
		}
		pl, _, _, err := init.ReadMessage(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(pl), "hi alice"; got != want {
			t.Errorf("payload 2: got %q; want %q", got, want)
		}
		// -> s, se
		msg, iSend, iRecv, err := init.WriteMessage(nil, []byte("hi bob"))
		if err != nil {
			t.Fatal(err)
		}
		pl, rRecv, rSend, err := resp.ReadMessage(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(pl), "hi bob"; got != want {
			t.Errorf("payload 3: got %q; want %q", got, want)
		}
		if iSend == nil || rRecv == nil {
			t.Fatal("handshake did not complete")
		}
		if got, want := init.PeerStatic(), bob.NoisePublic(); !bytes.Equal(got, want[:]) {
			t.Errorf("initiator sees peer static %x; want %x", got, want)
		}
		if got, want := resp.PeerStatic(), alice.NoisePublic(); !bytes.Equal(got, want[:]) {
			t.Errorf("responder sees peer static %x; want %x", got, want)
		}
		if !bytes.Equal(init.ChannelBinding(), resp.ChannelBinding()) {
			t.Errorf("channel binding differs")
		}
		ct, err := iSend.Encrypt(nil, nil, []byte("transport 1"))
		if err != nil {
			t.Fatal(err)
		}
		pt, err := rRecv.Decrypt(nil, nil, ct)
		if err != nil || string(pt) != "transport 1" {
			t.Errorf("transport i->r: got %q, %v; want %q, nil", pt, err, "transport 1")
		}
		ct, err = rSend.Encrypt(nil, nil, []byte("transport 2"))
		if err != nil {
			t.Fatal(err)
		}
		pt, err = iRecv.Decrypt(nil, nil, ct)
		if err != nil || string(pt) != "transport 2" {
			t.Errorf("transport r->i: got %q, %v; want %q, nil", pt, err, "transport 2")
		}
	})

	t.Run("X one-way", func(t *testing.T) {
		sender, err := noise.NewHandshakeState(noise.Config{
			CipherSuite: ours, Random: detRand(30), Pattern: noise.HandshakeX,
			Initiator: true, StaticKeypair: alice.NoiseKey(), PeerStatic: bob.NoiseKey().Public,
		})
		if err != nil {
			t.Fatal(err)
		}
		msg, _, _, err := sender.WriteMessage(nil, []byte("epoch key"))
		if err != nil {
			t.Fatal(err)
		}
		recv := func(st noise.DHKey) ([]byte, []byte, error) {
			r, err := noise.NewHandshakeState(noise.Config{
				CipherSuite: theirs, Pattern: noise.HandshakeX, StaticKeypair: st,
			})
			if err != nil {
				return nil, nil, err
			}
			pl, _, _, err := r.ReadMessage(nil, msg)
			return pl, r.PeerStatic(), err
		}
		pl, peer, err := recv(bob.NoiseKey())
		if err != nil || string(pl) != "epoch key" {
			t.Errorf("bob reads: got %q, %v; want %q, nil", pl, err, "epoch key")
		}
		if want := alice.NoisePublic(); !bytes.Equal(peer, want[:]) {
			t.Errorf("bob sees sender %x; want %x", peer, want)
		}
		if _, _, err := recv(mustGenerate(t, 12).NoiseKey()); err == nil {
			t.Errorf("another device reads: got nil error; want error")
		}
	})
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var errSink error

func BenchmarkDH(b *testing.B) {
	for _, impl := range []struct {
		name string
		dh   noise.DHFunc
	}{{"ecdh", DH25519}, {"noise", noise.DH25519}} {
		k1, _ := impl.dh.GenerateKeypair(detRand(1))
		k2, _ := impl.dh.GenerateKeypair(detRand(2))
		b.Run(impl.name+"/DH", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, errSink = impl.dh.DH(k1.Private, k2.Public)
			}
			if errSink != nil {
				b.Fatal(errSink)
			}
		})
		b.Run(impl.name+"/GenerateKeypair", func(b *testing.B) {
			b.ReportAllocs()
			r := detRand(3)
			for b.Loop() {
				_, errSink = impl.dh.GenerateKeypair(r)
			}
		})
	}
}
