//go:build !fieldmesh_noseal

package envelope

import (
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
)

// NoSeal is true only in a build with the test-only tag fieldmesh_noseal,
// where both layers carry plaintext (see the package documentation). A
// program that finds it true outside a test should refuse to run.
const NoSeal = false

// outerStream is the outer layer of the chain form: ChaCha20 under the
// epoch's outer key, no Poly1305 tag (the sender's signature covers every
// byte). It writes dst (at least as long as src).
func outerStream(key seal.EpochKey, nonce [seal.NonceSize]byte, dst, src []byte) {
	seal.Stream(key, nonce, dst, src)
}

// outerSeal is the outer layer of the commit form: ChaCha20-Poly1305 under the epoch's outer key.
func outerSeal(key seal.EpochKey, nonce [seal.NonceSize]byte, ad, pt []byte) []byte {
	return seal.Seal(key, nonce, ad, pt)
}

func outerOpen(key seal.EpochKey, nonce [seal.NonceSize]byte, ad, ct []byte) ([]byte, error) {
	return seal.Open(key, nonce, ad, ct)
}

// innerSeal is the inner layer: ChaCha20 under the next message key of the
// sender's chain, no tag (format 8: the op id, a hash of the plaintext, is
// signed).
func innerSeal(s *senderkey.SenderState, nonce [senderkey.NonceSize]byte, pt []byte) (uint32, []byte, error) {
	return s.SealStream(nonce, pt)
}

// innerPeek decrypts the inner layer without consuming the message key.
func innerPeek(r *senderkey.ReceiverState, index uint32, nonce [senderkey.NonceSize]byte, ct []byte) ([]byte, error) {
	return r.PeekStream(index, nonce, ct)
}
