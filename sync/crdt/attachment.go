package crdt

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"log/slog"

	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Attachment limits. A message's attachments travel outside its envelope,
// as sealed chunks (sync/attach); the message body carries only their
// manifests, so these limits bound what a message can make a receiver fetch
// and store.
const (
	// ChunkSize is the plaintext size of every chunk of an attachment but
	// the last, which holds the rest (1..ChunkSize bytes). 32 KiB: one
	// chunk is about 1 s of a 256 kbit/s link, so a contact that breaks
	// loses at most that much; a manifest costs 32 bytes per chunk, 0.1%.
	ChunkSize = 32 << 10
	// ChunkOverhead is what sealing adds to a chunk: the AEAD tag.
	ChunkOverhead = 16
	// MaxSealedChunk is the largest sealed chunk.
	MaxSealedChunk = ChunkSize + ChunkOverhead
	// MaxAttachmentSize is the largest attachment, in plaintext bytes:
	// 4 MiB, a scanned form or a short voice note; a re-encoded photo is
	// well under 1 MiB (sync/attach/image).
	MaxAttachmentSize = 4 << 20
	// MaxAttachmentChunks is the most chunks of one attachment.
	MaxAttachmentChunks = (MaxAttachmentSize + ChunkSize - 1) / ChunkSize
	// MaxAttachments is the most attachments of one message.
	MaxAttachments = 4
	// MaxMessageAttachmentBytes is the most plaintext bytes of all the
	// attachments of one message together: 8 MiB.
	MaxMessageAttachmentBytes = 8 << 20
	// MaxMediaTypeLen bounds an attachment's media type.
	MaxMediaTypeLen = 64
)

// ChunkKey is an attachment's random 32-byte key. It travels only inside
// the sealed message body, so only the message's readers hold it. It cannot
// be compared with == and prints as [redacted].
type ChunkKey struct {
	_ [0]func()
	k [32]byte
}

// NewChunkKey returns a ChunkKey holding k.
func NewChunkKey(k [32]byte) ChunkKey { return ChunkKey{k: k} }

// Bytes returns the key's bytes.
func (k ChunkKey) Bytes() [32]byte { return k.k }

// Equal compares two keys in constant time.
func (k ChunkKey) Equal(o ChunkKey) bool { return subtle.ConstantTimeCompare(k.k[:], o.k[:]) == 1 }

// String returns "[redacted]".
func (ChunkKey) String() string { return "[redacted]" }

// GoString returns "[redacted]", so %#v does not print the key either.
func (ChunkKey) GoString() string { return "[redacted]" }

// LogValue returns "[redacted]".
func (ChunkKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Attachment is the manifest of one attachment of a message: everything a
// reader needs to fetch, check and open its chunks (sync/attach).
//
// Encoding (inside a Message body): media type (uvarint length, bytes) |
// size uvarint (1..MaxAttachmentSize) | hash 32 | key 32 |
// ChunkCount(size) × chunk hash 32. The number of chunks is not on the
// wire: it follows from the size, so a manifest cannot claim a count its
// size does not need.
type Attachment struct {
	// Type is the media type ("image/jpeg", "application/pdf"), 1..MaxMediaTypeLen
	// bytes of printable ASCII.
	Type string
	// Size is the plaintext size in bytes, 1..MaxAttachmentSize.
	Size int
	// Hash is the SHA-256 of the plaintext.
	Hash [32]byte
	// Key seals every chunk (sync/attach).
	Key ChunkKey
	// Chunks are the SHA-256 of each sealed chunk, in order: the chunks'
	// content addresses. There are exactly ChunkCount(Size).
	Chunks [][32]byte
}

// ChunkCount returns how many chunks an attachment of size bytes has.
func ChunkCount(size int) int { return (size + ChunkSize - 1) / ChunkSize }

// ChunkLen returns the plaintext length of chunk i of an attachment of size
// bytes, or 0 if it has no chunk i.
func ChunkLen(size, i int) int {
	if i < 0 || size <= 0 || i >= ChunkCount(size) {
		return 0
	}
	return min(ChunkSize, size-i*ChunkSize)
}

// Validate checks the limits that a Message decoder enforces.
func (a Attachment) Validate() error {
	switch {
	case a.Type == "" || len(a.Type) > MaxMediaTypeLen:
		return fmt.Errorf("%w: media type is %d bytes (want 1..%d)", ErrInvalid, len(a.Type), MaxMediaTypeLen)
	case !printableASCII(a.Type):
		return fmt.Errorf("%w: media type is not printable ASCII", ErrInvalid)
	case a.Size <= 0 || a.Size > MaxAttachmentSize:
		return fmt.Errorf("%w: attachment is %d bytes (want 1..%d)", ErrInvalid, a.Size, MaxAttachmentSize)
	case len(a.Chunks) != ChunkCount(a.Size):
		return fmt.Errorf("%w: attachment of %d bytes with %d chunks (want %d)", ErrInvalid, a.Size, len(a.Chunks), ChunkCount(a.Size))
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func (a Attachment) append(b []byte) []byte {
	b = wire.AppendString(b, a.Type)
	b = binary.AppendUvarint(b, uint64(a.Size))
	b = append(b, a.Hash[:]...)
	b = append(b, a.Key.k[:]...)
	for _, c := range a.Chunks {
		b = append(b, c[:]...)
	}
	return b
}

func readAttachment(d *wire.Reader) Attachment {
	var a Attachment
	a.Type = d.String("media type", MaxMediaTypeLen)
	size := d.Uvarint()
	if d.Err() == nil && (size == 0 || size > MaxAttachmentSize) {
		d.Fail(fmt.Errorf("%w: attachment is %d bytes (want 1..%d)", ErrInvalid, size, MaxAttachmentSize))
	}
	a.Size = int(size)
	copy(a.Hash[:], d.Fixed(32))
	copy(a.Key.k[:], d.Fixed(32))
	n := ChunkCount(a.Size)
	if d.Err() == nil && d.Len() < 32*n {
		d.Fail(fmt.Errorf("%w: %d chunk hashes, %d bytes left", ErrTruncated, n, d.Len()))
	}
	if d.Err() != nil {
		return Attachment{}
	}
	a.Chunks = make([][32]byte, n)
	for i := range a.Chunks {
		copy(a.Chunks[i][:], d.Fixed(32))
	}
	if d.Err() == nil {
		if err := a.Validate(); err != nil {
			d.Fail(err)
		}
	}
	return a
}

// checkAttachments checks the per-message limits of a list of attachments.
func checkAttachments(as []Attachment) error {
	if len(as) > MaxAttachments {
		return fmt.Errorf("%w: %d attachments, limit %d", ErrInvalid, len(as), MaxAttachments)
	}
	total := 0
	for i, a := range as {
		if err := a.Validate(); err != nil {
			return fmt.Errorf("attachment %d: %w", i, err)
		}
		total += a.Size
	}
	if total > MaxMessageAttachmentBytes {
		return fmt.Errorf("%w: attachments total %d bytes, limit %d", ErrInvalid, total, MaxMessageAttachmentBytes)
	}
	return nil
}

// appendAttachments appends the attachment section of a Message (head bit
// 4): a count, then each attachment. It appends nothing for none.
func appendAttachments(b []byte, as []Attachment) []byte {
	if len(as) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(as)))
	for _, a := range as {
		b = a.append(b)
	}
	return b
}

// readAttachments reads the attachment section of a Message whose head says
// it has one: a count of at least 1, then each attachment.
func readAttachments(d *wire.Reader) []Attachment {
	n := d.Count(MaxAttachments, 1+1+64)
	if d.Err() == nil && n == 0 {
		d.Fail(fmt.Errorf("%w: attachment count 0 (head bit 4 is left clear instead)", ErrMalformed))
	}
	if d.Err() != nil {
		return nil
	}
	as := make([]Attachment, 0, n)
	for range n {
		as = append(as, readAttachment(d))
	}
	if d.Err() == nil {
		if err := checkAttachments(as); err != nil {
			d.Fail(err)
		}
	}
	return as
}

// AttachmentBytes returns the plaintext bytes of all of m's attachments.
func (m Message) AttachmentBytes() int {
	n := 0
	for _, a := range m.Attachments {
		n += a.Size
	}
	return n
}
