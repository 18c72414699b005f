package epochkey

import (
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/flynn/noise"
)

// Prekey is a one-time X25519 key a device publishes so that boxes are sealed to a key it can
// destroy, not to its static key (which it must keep). Its private half is secret: wipe it
// (Wipe) once it is retired.
type Prekey struct {
	Public  identity.NoisePublic
	Private [32]byte
}

// NewPrekey generates a prekey from rand (nil = crypto/rand).
func NewPrekey(rnd io.Reader) (Prekey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var p Prekey
	if _, err := io.ReadFull(rnd, p.Private[:]); err != nil {
		return Prekey{}, fmt.Errorf("epochkey: prekey: %w", err)
	}
	k, err := ecdh.X25519().NewPrivateKey(p.Private[:])
	if err != nil {
		return Prekey{}, fmt.Errorf("epochkey: prekey: %w", err)
	}
	copy(p.Public[:], k.PublicKey().Bytes())
	return p, nil
}

// PrekeyFromPrivate rebuilds a prekey from its private half (a stored one).
func PrekeyFromPrivate(priv [32]byte) (Prekey, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return Prekey{}, fmt.Errorf("epochkey: prekey: %w", err)
	}
	p := Prekey{Private: priv}
	copy(p.Public[:], k.PublicKey().Bytes())
	return p, nil
}

// Wipe overwrites the private half.
func (p *Prekey) Wipe() { clear(p.Private[:]) }

// OpenAnyWith is [OpenAny] with a prekey in place of a device's static key.
func OpenAnyWith(p Prekey, prologue []byte, msgs [][]byte) (index int, sender identity.NoisePublic, payload []byte, err error) {
	static := noise.DHKey{Private: append([]byte(nil), p.Private[:]...), Public: append([]byte(nil), p.Public[:]...)}
	defer clear(static.Private)
	return openAny(static, prologue, msgs)
}
