//go:build fieldmesh_noseal

package attach

import (
	"bytes"
	"errors"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// This file exists only in builds with the test-only tag fieldmesh_noseal, which no normal build
// (go build, go install, the release) has, as sync/envelope's layer_noseal.go: a chunk carries its
// plaintext followed by the 16 bytes "fieldmesh-noseal" where the Poly1305 tag would be, so sizes
// and addresses work as in a normal build and the chaos run's control finds attachment plaintext on
// the wire. A normal build refuses such chunks (they do not open).

// NoSeal is true only in a build with the test-only tag fieldmesh_noseal.
const NoSeal = true

var noSealMark = []byte("fieldmesh-noseal")

type chunkAEAD interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}

type noSealAEAD struct{}

func newAEAD(crdt.ChunkKey) chunkAEAD {
	if len(noSealMark) != crdt.ChunkOverhead {
		panic("attach: the noseal mark must be as long as a tag")
	}
	return noSealAEAD{}
}

func (noSealAEAD) Seal(dst, _, pt, _ []byte) []byte {
	return append(append(dst, pt...), noSealMark...)
}

func (noSealAEAD) Open(dst, _, ct, _ []byte) ([]byte, error) {
	if !bytes.HasSuffix(ct, noSealMark) {
		return nil, errors.New("attach: not a noseal chunk")
	}
	return append(dst, ct[:len(ct)-len(noSealMark)]...), nil
}
