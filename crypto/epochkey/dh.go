package epochkey

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/flynn/noise"
)

// keyedDH is X25519 (crypto/ecdh) as a flynn/noise DHFunc, interoperable
// with identity.DH25519 and noise.DH25519, that keeps the *ecdh.PrivateKey
// of one static key and of the last ephemeral key it generated. A DH with
// either costs one scalar multiplication instead of two:
// ecdh.X25519().NewPrivateKey derives the public key (a full Montgomery
// ladder) every time identity.DH25519.DH or noise.DH25519.DH is called.
// Any other private key falls back to identity.DH25519. It reads 32 bytes
// of randomness per ephemeral key, like identity.DH25519, so the same
// reader gives the same messages.
//
// One keyedDH serves one message or one hand-over, on one goroutine.
type keyedDH struct {
	static, eph       *ecdh.PrivateKey
	staticRaw, ephRaw []byte // their private bytes, to recognise them
}

func newKeyedDH(staticPriv []byte) (*keyedDH, error) {
	k, err := ecdh.X25519().NewPrivateKey(staticPriv)
	if err != nil {
		return nil, fmt.Errorf("epochkey: x25519 static key: %w", err)
	}
	return &keyedDH{static: k, staticRaw: k.Bytes()}, nil
}

// keyedSuite is Noise_X_25519_ChaChaPoly_SHA256 with a keyedDH for static.
func keyedSuite(static noise.DHKey) (noise.CipherSuite, *keyedDH, error) {
	dh, err := newKeyedDH(static.Private)
	if err != nil {
		return nil, nil, err
	}
	return noise.NewCipherSuite(dh, noise.CipherChaChaPoly, noise.HashSHA256), dh, nil
}

func (k *keyedDH) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	if rng == nil {
		rng = rand.Reader
	}
	var priv [32]byte
	defer clear(priv[:])
	if _, err := io.ReadFull(rng, priv[:]); err != nil {
		return noise.DHKey{}, fmt.Errorf("epochkey: generate x25519 key: %w", err)
	}
	e, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return noise.DHKey{}, fmt.Errorf("epochkey: x25519 key: %w", err)
	}
	clear(k.ephRaw)
	k.eph, k.ephRaw = e, e.Bytes()
	return noise.DHKey{Private: e.Bytes(), Public: e.PublicKey().Bytes()}, nil
}

func (k *keyedDH) DH(privkey, pubkey []byte) ([]byte, error) {
	var priv *ecdh.PrivateKey
	switch {
	case k.static != nil && subtle.ConstantTimeCompare(privkey, k.staticRaw) == 1:
		priv = k.static
	case k.eph != nil && subtle.ConstantTimeCompare(privkey, k.ephRaw) == 1:
		priv = k.eph
	default:
		return identity.DH25519.DH(privkey, pubkey)
	}
	pub, err := ecdh.X25519().NewPublicKey(pubkey)
	if err != nil {
		return nil, fmt.Errorf("epochkey: x25519 public key: %w", err)
	}
	out, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("epochkey: x25519: %w", err)
	}
	return out, nil
}

func (k *keyedDH) DHLen() int     { return 32 }
func (k *keyedDH) DHName() string { return "25519" }

// wipe clears the private bytes it holds (best effort: ecdh keeps its own
// copies, which the garbage collector frees).
func (k *keyedDH) wipe() {
	clear(k.staticRaw)
	clear(k.ephRaw)
	k.static, k.eph = nil, nil
}

var _ noise.DHFunc = (*keyedDH)(nil)
