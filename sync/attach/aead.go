//go:build !fieldmesh_noseal

package attach

import (
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// NoSeal is true only in a build with the test-only tag fieldmesh_noseal (aead_noseal.go).
const NoSeal = false

// chunkAEAD is the chunk cipher: ChaCha20-Poly1305.
type chunkAEAD interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}

func newAEAD(k crdt.ChunkKey) chunkAEAD {
	kb := k.Bytes()
	aead, err := chacha20poly1305.New(kb[:])
	if err != nil {
		panic(err) // unreachable: the key is 32 bytes
	}
	return aead
}
