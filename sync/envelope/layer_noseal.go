//go:build fieldmesh_noseal

package envelope

import (
	"bytes"

	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
)

// This file exists only in builds with the test-only tag fieldmesh_noseal,
// which no normal build (go build, go install, the release) has: every
// layer carries its plaintext, followed, in the commit form, by the 16
// bytes "fieldmesh-noseal" where a Poly1305 tag would be (the chain form's
// layers have none), so the wire layout and sizes stay those of a normal
// build and a control run can find plaintext on the wire. A normal build
// refuses such envelopes (its AEAD, or the signature and the op id). The boxes are still
// sealed, and the sender and receiver chains advance as in a normal build
// (Consume), so replays are refused the same way.

// NoSeal is true only in a build with the test-only tag fieldmesh_noseal.
const NoSeal = true

var noSealMark = []byte("fieldmesh-noseal")

func init() {
	if len(noSealMark) != seal.Overhead || seal.Overhead != senderkey.Overhead {
		panic("envelope: the noseal mark must be as long as a tag")
	}
}

// outerStream carries its plaintext: the chain form's outer layer has no
// tag to mark, and the layout does not change.
func outerStream(_ seal.EpochKey, _ [seal.NonceSize]byte, dst, src []byte) {
	copy(dst, src)
}

func outerSeal(_ seal.EpochKey, _ [seal.NonceSize]byte, _, pt []byte) []byte {
	return append(bytes.Clone(pt), noSealMark...)
}

func outerOpen(_ seal.EpochKey, _ [seal.NonceSize]byte, _, ct []byte) ([]byte, error) {
	if !bytes.HasSuffix(ct, noSealMark) {
		return nil, seal.ErrOpen
	}
	return bytes.Clone(ct[:len(ct)-len(noSealMark)]), nil
}

func innerSeal(s *senderkey.SenderState, nonce [senderkey.NonceSize]byte, pt []byte) (uint32, []byte, error) {
	index, _, err := s.SealStream(nonce, nil) // advance the chain as a normal build does
	if err != nil {
		return 0, nil, err
	}
	return index, bytes.Clone(pt), nil
}

func innerPeek(r *senderkey.ReceiverState, index uint32, _ [senderkey.NonceSize]byte, ct []byte) ([]byte, error) {
	if err := r.Check(index); err != nil {
		return nil, err
	}
	return bytes.Clone(ct), nil
}
