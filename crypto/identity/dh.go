package identity

import (
	"crypto/ecdh"
	"fmt"
	"io"

	"github.com/flynn/noise"
)

// DH25519 is X25519 (RFC 7748) as a flynn/noise DHFunc, named "25519" like
// noise.DH25519 and interoperable with it, computed by crypto/ecdh.
//
// GenerateKeypair reads the 32 private-key bytes from its reader itself (nil
// means crypto/rand), so the handshake's Config.Random is honoured. DH
// returns an error for keys that are not 32 bytes and for a low-order public
// key (an all-zero shared secret).
var DH25519 noise.DHFunc = dh25519{}

type dh25519 struct{}

func (dh25519) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	if rng == nil {
		rng = cryptoRand
	}
	var priv [32]byte
	if _, err := io.ReadFull(rng, priv[:]); err != nil {
		return noise.DHKey{}, fmt.Errorf("identity: generate x25519 key: %w", err)
	}
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return noise.DHKey{}, fmt.Errorf("identity: x25519 key: %w", err)
	}
	return noise.DHKey{Private: k.Bytes(), Public: k.PublicKey().Bytes()}, nil
}

func (dh25519) DH(privkey, pubkey []byte) ([]byte, error) {
	priv, err := ecdh.X25519().NewPrivateKey(privkey)
	if err != nil {
		return nil, fmt.Errorf("identity: x25519 private key: %w", err)
	}
	pub, err := ecdh.X25519().NewPublicKey(pubkey)
	if err != nil {
		return nil, fmt.Errorf("identity: x25519 public key: %w", err)
	}
	out, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("identity: x25519: %w", err)
	}
	return out, nil
}

func (dh25519) DHLen() int     { return 32 }
func (dh25519) DHName() string { return "25519" }
