// Package attach seals, checks and opens message attachments, and is the
// sans-I/O pull protocol that moves their chunks between devices and relays.
//
// # Construction
//
// A message's attachment is cut into chunks of crdt.ChunkSize plaintext
// bytes (the last holds the rest). Each attachment has its own random
// 32-byte key K, drawn when it is sealed; chunk i is sealed with
// ChaCha20-Poly1305 under K with the nonce i (a 12-byte big-endian
// integer) and the associated data "fieldmesh/v1/attachment" ‖ size u64 ‖
// i u32, so a chunk cannot be moved to another position or into an
// attachment of another size. A sealed chunk's address is its SHA-256. The
// manifest (crdt.Attachment: media type, size, SHA-256 of the plaintext,
// K, and the address of every chunk) travels inside the sealed message
// body: only the message's readers learn K or which chunks belong
// together. Since K is fresh for every attachment and never seals two
// plaintexts at one index, deriving the nonce from the index is safe.
//
// A receiver checks every chunk before it stores it: its length must be
// the one the manifest's size implies for that index, and its SHA-256 the
// manifest's address ([CheckChunk]). Relays and devices that cannot open
// the message store and serve sealed chunks by address: a relay checks
// only that a chunk hashes to the address it is stored under and fits
// crdt.MaxSealedChunk. Opening ([Open]) checks the AEAD of every chunk and
// the plaintext's SHA-256 against the manifest.
//
// # Pull protocol
//
// The requester asks for chunks by address and the server answers each in
// turn (wire formats at [MarshalRequest] and [MarshalResponse]). [Fetch]
// is the requester's state machine: it knows, from the manifests, the
// exact length of every chunk it asks for, so it refuses a response frame
// longer than that before reading it ([Fetch.Limit]), and a response that
// is not the chunk asked for is [ErrBadPeer]. A chunk stored is never
// asked for again, so a transfer cut by a lost contact or a kill resumes
// where it stopped, from any peer that has the rest.
//
// Concurrency: a Fetch is not safe for concurrent use; the functions are.
package attach

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Errors.
var (
	// ErrBadChunk: a sealed chunk that is not the one its manifest names
	// (wrong length or address), or that does not open.
	ErrBadChunk = errors.New("attach: chunk does not match its manifest")
	// ErrTooLarge: an attachment above crdt.MaxAttachmentSize, or
	// attachments above the per-message limits.
	ErrTooLarge = errors.New("attach: too large")
)

const adLabel = "fieldmesh/v1/attachment"

// Seal seals data as one attachment of media type typ under a fresh key
// drawn from rand (nil: crypto/rand). It returns the manifest and the
// sealed chunks, in order. It refuses empty data and data above
// crdt.MaxAttachmentSize before sealing anything.
func Seal(rand io.Reader, typ string, data []byte) (crdt.Attachment, [][]byte, error) {
	if len(data) == 0 {
		return crdt.Attachment{}, nil, fmt.Errorf("attach: the attachment is empty")
	}
	if len(data) > crdt.MaxAttachmentSize {
		return crdt.Attachment{}, nil, fmt.Errorf("%w: the attachment is %d bytes, limit %d", ErrTooLarge, len(data), crdt.MaxAttachmentSize)
	}
	var k [32]byte
	if err := readRand(rand, k[:]); err != nil {
		return crdt.Attachment{}, nil, fmt.Errorf("attach: drawing a key: %w", err)
	}
	a := crdt.Attachment{Type: typ, Size: len(data), Hash: sha256.Sum256(data), Key: crdt.NewChunkKey(k)}
	aead := newAEAD(a.Key)
	n := crdt.ChunkCount(len(data))
	chunks := make([][]byte, n)
	a.Chunks = make([][32]byte, n)
	for i := range n {
		pt := data[i*crdt.ChunkSize : i*crdt.ChunkSize+crdt.ChunkLen(a.Size, i)]
		chunks[i] = aead.Seal(make([]byte, 0, len(pt)+crdt.ChunkOverhead), nonce(i), pt, ad(a.Size, i))
		a.Chunks[i] = sha256.Sum256(chunks[i])
	}
	if err := a.Validate(); err != nil {
		return crdt.Attachment{}, nil, fmt.Errorf("attach: %w", err)
	}
	return a, chunks, nil
}

// SealedLen returns the length of sealed chunk i of a.
func SealedLen(a crdt.Attachment, i int) int {
	return crdt.ChunkLen(a.Size, i) + crdt.ChunkOverhead
}

// CheckChunk checks that sealed is chunk i of a: its length and its
// address. It does not open it (a device that stores a chunk for later
// need not), and it costs one SHA-256.
func CheckChunk(a crdt.Attachment, i int, sealed []byte) error {
	if i < 0 || i >= len(a.Chunks) {
		return fmt.Errorf("%w: no chunk %d of %d", ErrBadChunk, i, len(a.Chunks))
	}
	if len(sealed) != SealedLen(a, i) {
		return fmt.Errorf("%w: chunk %d is %d bytes, want %d", ErrBadChunk, i, len(sealed), SealedLen(a, i))
	}
	if sha256.Sum256(sealed) != a.Chunks[i] {
		return fmt.Errorf("%w: chunk %d has another address", ErrBadChunk, i)
	}
	return nil
}

// CheckAddressed checks what a relay can: that sealed fits a sealed chunk
// and hashes to addr.
func CheckAddressed(addr [32]byte, sealed []byte) error {
	if len(sealed) <= crdt.ChunkOverhead || len(sealed) > crdt.MaxSealedChunk {
		return fmt.Errorf("%w: %d bytes", ErrBadChunk, len(sealed))
	}
	if sha256.Sum256(sealed) != addr {
		return fmt.Errorf("%w: another address", ErrBadChunk)
	}
	return nil
}

// OpenChunk checks and opens chunk i of a.
func OpenChunk(a crdt.Attachment, i int, sealed []byte) ([]byte, error) {
	if err := CheckChunk(a, i, sealed); err != nil {
		return nil, err
	}
	pt, err := newAEAD(a.Key).Open(nil, nonce(i), sealed, ad(a.Size, i))
	if err != nil {
		return nil, fmt.Errorf("%w: chunk %d does not open", ErrBadChunk, i)
	}
	return pt, nil
}

// Open opens the whole attachment a, reading its sealed chunks through
// chunk, and checks the plaintext against the manifest's hash. It
// returns the plaintext, or an error and no bytes.
func Open(a crdt.Attachment, chunk func(i int) ([]byte, error)) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	out := make([]byte, 0, a.Size)
	for i := range a.Chunks {
		sealed, err := chunk(i)
		if err != nil {
			return nil, fmt.Errorf("attach: reading chunk %d: %w", i, err)
		}
		pt, err := OpenChunk(a, i, sealed)
		if err != nil {
			return nil, err
		}
		out = append(out, pt...)
	}
	if sha256.Sum256(out) != a.Hash {
		return nil, fmt.Errorf("%w: the plaintext has another hash", ErrBadChunk)
	}
	return out, nil
}

func nonce(i int) []byte {
	var n [chacha20poly1305.NonceSize]byte
	binary.BigEndian.PutUint32(n[8:], uint32(i))
	return n[:]
}

func ad(size, i int) []byte {
	b := make([]byte, 0, len(adLabel)+12)
	b = append(b, adLabel...)
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	return binary.BigEndian.AppendUint32(b, uint32(i))
}
