package senderkey

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"golang.org/x/crypto/chacha20poly1305"
)

// Limits and sizes.
const (
	// MaxSkipped is the most skipped message keys a ReceiverState stores
	// (count): keys of messages that have not arrived yet while later ones
	// have. Open refuses a message that would need more.
	MaxSkipped = 1000
	// MaxIndex is the largest message index (messages 0 to MaxIndex, about
	// four billion, per sender and epoch). Seal fails after it.
	MaxIndex = math.MaxUint32 - 1
	// Overhead is what Seal adds to a plaintext, in bytes: the Poly1305 tag.
	Overhead = chacha20poly1305.Overhead
)

// Derivation constants (see the package documentation).
const (
	chainSalt = "fieldmesh/v1/senderkey/chain"
	msgConst  = 0x01 // message key  = HMAC-SHA256(chain key, 0x01)
	nextConst = 0x02 // next chain key = HMAC-SHA256(chain key, 0x02)
)

// Errors. Every error of this package wraps one of these.
var (
	// ErrOpen: the ciphertext does not authenticate under the message key
	// of that index (wrong sender, epoch, index or associated data, or
	// tampered). The receiver state is unchanged.
	ErrOpen = errors.New("senderkey: message authentication failed")
	// ErrReplay: the index was already opened (its key is deleted).
	ErrReplay = errors.New("senderkey: message index already used")
	// ErrTooFarAhead: opening the index would store more than MaxSkipped
	// skipped keys. The state is unchanged; keep the message and try again
	// once earlier messages of this sender have arrived.
	ErrTooFarAhead = errors.New("senderkey: message index too far ahead")
	// ErrExhausted: the sender has used every index of its chain; it needs
	// a new epoch.
	ErrExhausted = errors.New("senderkey: chain exhausted, a new epoch is needed")
	// ErrRejected wraps the error of an OpenChecked check function.
	ErrRejected = errors.New("senderkey: plaintext rejected")
	// ErrEncoding: a state encoding is malformed.
	ErrEncoding = errors.New("senderkey: bad state encoding")
)

// chainKey is one link of a sender's hash chain. Secret.
type chainKey [32]byte

// messageKey is the ChaCha20-Poly1305 key of one message. Secret.
type messageKey [32]byte

// initialChain derives a sender's first chain key from the epoch key:
// HKDF-SHA256(secret = epoch key, salt = "fieldmesh/v1/senderkey/chain",
// info = the sender's device id, 32 bytes).
func initialChain(key seal.EpochKey, sender identity.DeviceID) chainKey {
	secret := key.Bytes()
	defer clear(secret)
	out, err := hkdf.Key(sha256.New, secret, []byte(chainSalt), string(sender[:]), 32)
	if err != nil {
		panic("senderkey: hkdf: " + err.Error()) // unreachable: 32 bytes is within HKDF's limit
	}
	defer clear(out)
	return chainKey(out)
}

// step returns the message key of c and the chain key after it:
// HMAC-SHA256(c, 0x01) and HMAC-SHA256(c, 0x02). HMAC (RFC 2104) is written
// out for a 32-byte key and a 1-byte message, on stack buffers:
// SHA-256((K ^ opad) || SHA-256((K ^ ipad) || m)), K zero-padded to 64
// bytes. That is three times faster than crypto/hmac here, with no
// allocation; the tests check it against crypto/hmac.
func (c *chainKey) step() (messageKey, chainKey) {
	var inner [sha256.BlockSize + 1]byte
	var outer [sha256.BlockSize + sha256.Size]byte
	for i := range sha256.BlockSize {
		var k byte
		if i < len(c) {
			k = c[i]
		}
		inner[i] = k ^ 0x36
		outer[i] = k ^ 0x5c
	}
	mac := func(m byte) [32]byte {
		inner[sha256.BlockSize] = m
		ih := sha256.Sum256(inner[:])
		copy(outer[sha256.BlockSize:], ih[:])
		clear(ih[:])
		return sha256.Sum256(outer[:])
	}
	mk, next := messageKey(mac(msgConst)), chainKey(mac(nextConst))
	clear(inner[:])
	clear(outer[:])
	return mk, next
}

// NonceSize is the size of the nonce the caller gives Seal and Open: the
// ChaCha20-Poly1305 nonce under the message key.
const NonceSize = chacha20poly1305.NonceSize

func (k *messageKey) seal(nonce [NonceSize]byte, ad, plaintext []byte) []byte {
	aead, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic("senderkey: " + err.Error()) // unreachable: the key is 32 bytes
	}
	return aead.Seal(make([]byte, 0, len(plaintext)+Overhead), nonce[:], plaintext, ad)
}

func (k *messageKey) open(nonce [NonceSize]byte, ad, ct []byte) ([]byte, error) {
	if len(ct) < Overhead {
		return nil, ErrOpen
	}
	aead, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic("senderkey: " + err.Error()) // unreachable: the key is 32 bytes
	}
	pt, err := aead.Open(make([]byte, 0, len(ct)-Overhead), nonce[:], ct, ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// stream XORs b with the ChaCha20 keystream of the message key and nonce,
// from block 1, as ChaCha20-Poly1305 encrypts (block 0 would be its
// Poly1305 key), into a new slice: no tag.
func (k *messageKey) stream(nonce [NonceSize]byte, b []byte) []byte {
	out := make([]byte, len(b))
	seal.StreamKey((*[seal.KeySize]byte)(k), nonce, out, b)
	return out
}

// SenderState is this device's sending chain in one epoch: the index of the
// next message and its chain key. It is a secret: it prints as
// "[redacted]"; compare with [SenderState.Equal]. It is not safe for
// concurrent use.
type SenderState struct {
	_      [0]func() // not comparable
	sender identity.DeviceID
	next   uint32 // index of the next message; MaxIndex+1 when exhausted
	chain  chainKey
}

// NewSender starts the sending chain of device self under an epoch key, at
// index 0. Call it once per (epoch, device): a second SenderState for the
// same epoch and device reuses message keys (see the package caveats).
func NewSender(key seal.EpochKey, self identity.DeviceID) *SenderState {
	return &SenderState{sender: self, chain: initialChain(key, self)}
}

// Sender returns the device whose chain this is.
func (s *SenderState) Sender() identity.DeviceID { return s.sender }

// Next returns the index the next Seal will use.
func (s *SenderState) Next() uint32 { return s.next }

// Seal encrypts plaintext with associated data ad under the next message
// key and the given nonce, advances the chain and overwrites the chain key
// it used. The ciphertext is len(plaintext)+[Overhead] bytes; send index
// with it. The nonce should be derived from the plaintext (fieldmesh uses
// the first bytes of the op id, a hash of the op): a message key then never
// meets one nonce with two plaintexts, even if the state was rolled back or
// its sender seals two messages at one index on purpose.
//
// Persist the advanced state (MarshalBinary) durably before the ciphertext
// leaves the device: a state restored from before this call would seal
// another message at the same index.
func (s *SenderState) Seal(nonce [NonceSize]byte, ad, plaintext []byte) (index uint32, ct []byte, err error) {
	index, mk, err := s.nextKey()
	if err != nil {
		return 0, nil, err
	}
	defer clear(mk[:])
	return index, mk.seal(nonce, ad, plaintext), nil
}

// nextKey returns the next index and its message key, and moves the chain
// past it (the chain key it used is overwritten). The caller clears the
// message key after its one use.
func (s *SenderState) nextKey() (uint32, messageKey, error) {
	if s.next > MaxIndex {
		return 0, messageKey{}, ErrExhausted
	}
	mk, next := s.chain.step()
	index := s.next
	s.chain = next
	clear(next[:])
	s.next++
	return index, mk, nil
}

// SealStream is Seal without authentication: the plaintext is encrypted
// with ChaCha20 under the message key of the next index and the nonce, and
// the ciphertext is as long as the plaintext (no Poly1305 tag, no
// associated data). Use it only where something else checks every byte of
// both: fieldmesh's chain-form envelope (sync/envelope, format 8), whose
// author signs the op id (a hash of the plaintext) and a hash of the
// ciphertext. The nonce must be derived from the plaintext, as for Seal. The
// state advances as with Seal; persist it the same way.
func (s *SenderState) SealStream(nonce [NonceSize]byte, plaintext []byte) (index uint32, ct []byte, err error) {
	index, mk, err := s.nextKey()
	if err != nil {
		return 0, nil, err
	}
	defer clear(mk[:])
	return index, mk.stream(nonce, plaintext), nil
}

// Equal reports whether s and o are the same state, in constant time with
// respect to the chain key.
func (s *SenderState) Equal(o *SenderState) bool {
	if s == nil || o == nil {
		return s == o
	}
	a, _ := s.MarshalBinary()
	b, _ := o.MarshalBinary()
	defer clear(a)
	defer clear(b)
	return subtle.ConstantTimeCompare(a, b) == 1
}

// String returns "[redacted]".
func (s *SenderState) String() string { return "[redacted]" }

// GoString returns "[redacted]".
func (s *SenderState) GoString() string { return "[redacted]" }

// LogValue logs "[redacted]".
func (s *SenderState) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// ReceiverState is this device's view of one sender's chain in one epoch:
// the chain key of the next index not yet reached, and the keys of skipped
// messages (indices below it that have not arrived yet), at most
// [MaxSkipped]. Keys are deleted as soon as their message is opened. It is a
// secret: it prints as "[redacted]"; compare with [ReceiverState.Equal]. It
// is not safe for concurrent use.
type ReceiverState struct {
	_       [0]func() // not comparable
	sender  identity.DeviceID
	next    uint32 // the chain key below is that of index next; MaxIndex+1 when exhausted
	chain   chainKey
	skipped map[uint32]messageKey // every index < next; len ≤ MaxSkipped
}

// NewReceiver starts the view of sender's chain under an epoch key, at
// index 0. Every member holding the epoch key can do this for every sender.
func NewReceiver(key seal.EpochKey, sender identity.DeviceID) *ReceiverState {
	return &ReceiverState{sender: sender, chain: initialChain(key, sender), skipped: map[uint32]messageKey{}}
}

// Sender returns the device whose chain this is.
func (r *ReceiverState) Sender() identity.DeviceID { return r.sender }

// Next returns the lowest index not reached yet: every index below it has
// been opened or is skipped.
func (r *ReceiverState) Next() uint32 { return r.next }

// Skipped returns how many skipped message keys the state holds.
func (r *ReceiverState) Skipped() int { return len(r.skipped) }

// Open opens the message of the given index and commits; see
// [ReceiverState.OpenChecked].
func (r *ReceiverState) Open(index uint32, nonce [NonceSize]byte, ad, ct []byte) ([]byte, error) {
	return r.OpenChecked(index, nonce, ad, ct, nil)
}

// OpenChecked authenticates and decrypts the message of the given index
// (Peek), then calls check (if not nil) on the plaintext, and only if check
// returns nil does it commit (Consume): the message key is deleted, and when
// index is at or past Next, the keys of the indices jumped over are stored
// as skipped and the chain advances past index. On any error the state is
// unchanged.
//
// Errors: [ErrReplay] (index already opened), [ErrTooFarAhead] (more than
// MaxSkipped keys would be stored), [ErrOpen] (including an index above
// MaxIndex), and [ErrRejected] wrapping check's error.
//
// Every member can derive every sender's chain, so a member can forge a
// ciphertext under another sender's chain: check is where the caller
// verifies the author's signature (over a message that includes the epoch
// and the index) before the index is consumed, so a forged message cannot
// burn the index of a genuine one.
func (r *ReceiverState) OpenChecked(index uint32, nonce [NonceSize]byte, ad, ct []byte, check func(plaintext []byte) error) ([]byte, error) {
	pt, err := r.Peek(index, nonce, ad, ct)
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(pt); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRejected, err)
		}
	}
	if err := r.Consume(index); err != nil {
		return nil, err // unreachable: Peek succeeded on the same state
	}
	return pt, nil
}

// Peek authenticates and decrypts the message of the given index without
// changing the state: the key of an index below Next comes from the
// skipped keys, the key of a later one is derived by walking a copy of the
// chain. A message that opens can be opened again until its index is
// consumed. Errors: [ErrReplay], [ErrTooFarAhead], [ErrOpen].
//
// Cost: one AEAD open, plus one HMAC step per index between Next and index
// (at most MaxSkipped).
func (r *ReceiverState) Peek(index uint32, nonce [NonceSize]byte, ad, ct []byte) ([]byte, error) {
	mk, err := r.key(index)
	if err != nil {
		return nil, err
	}
	defer clear(mk[:])
	return mk.open(nonce, ad, ct)
}

// PeekStream decrypts a message of SealStream at the given index without
// changing the state, as Peek does. Nothing is authenticated: a changed
// ciphertext decrypts to other bytes, which the caller must refuse (it
// checks the plaintext against what the author signed) before it consumes
// the index. Errors: [ErrReplay], [ErrTooFarAhead], [ErrOpen] (an index
// above MaxIndex).
func (r *ReceiverState) PeekStream(index uint32, nonce [NonceSize]byte, ct []byte) ([]byte, error) {
	mk, err := r.key(index)
	if err != nil {
		return nil, err
	}
	defer clear(mk[:])
	return mk.stream(nonce, ct), nil
}

// key returns the message key of index without changing the state.
func (r *ReceiverState) key(index uint32) (messageKey, error) {
	if index > MaxIndex {
		return messageKey{}, ErrOpen // no sender ever uses this index
	}
	if index < r.next {
		mk, ok := r.skipped[index]
		if !ok {
			return messageKey{}, fmt.Errorf("%w: index %d of %v", ErrReplay, index, r.sender.Short())
		}
		return mk, nil
	}
	if err := r.checkGap(index); err != nil {
		return messageKey{}, err
	}
	chain := r.chain
	defer clear(chain[:])
	for range index - r.next {
		_, next := chain.step()
		chain = next
		clear(next[:])
	}
	mk, next := chain.step()
	clear(next[:])
	return mk, nil
}

// checkGap refuses an index at or past Next whose skipped keys would not fit.
func (r *ReceiverState) checkGap(index uint32) error {
	gap := index - r.next
	if uint64(len(r.skipped))+uint64(gap) > MaxSkipped {
		return fmt.Errorf("%w: index %d of %v needs %d skipped keys, %d already stored, at most %d",
			ErrTooFarAhead, index, r.sender.Short(), gap, len(r.skipped), MaxSkipped)
	}
	return nil
}

// Consume marks the message of the given index as opened, without
// decrypting anything: its key is deleted, and when index is at or past
// Next, the keys of the indices jumped over are stored as skipped and the
// chain advances past index. Call it once the message opened (Peek) and was
// accepted. Errors: [ErrReplay] (already consumed), [ErrTooFarAhead],
// [ErrOpen] (an index above MaxIndex); on error the state is unchanged.
func (r *ReceiverState) Consume(index uint32) error {
	if index > MaxIndex {
		return ErrOpen
	}
	if index < r.next {
		mk, ok := r.skipped[index]
		if !ok {
			return fmt.Errorf("%w: index %d of %v", ErrReplay, index, r.sender.Short())
		}
		clear(mk[:])
		r.skipped[index] = messageKey{} // overwrite, then delete
		delete(r.skipped, index)
		return nil
	}
	if err := r.checkGap(index); err != nil {
		return err
	}
	chain := r.chain
	for i := r.next; i < index; i++ {
		mk, next := chain.step()
		r.skipped[i] = mk
		clear(mk[:])
		chain = next
		clear(next[:])
	}
	mk, next := chain.step()
	clear(mk[:])
	r.chain = next
	clear(next[:])
	clear(chain[:])
	r.next = index + 1
	return nil
}

// Check reports, without deriving a key, why the message of the given index
// cannot be opened now, if it cannot: the errors Peek returns before it
// tries the key ([ErrReplay], [ErrTooFarAhead], [ErrOpen] for an index
// above MaxIndex).
func (r *ReceiverState) Check(index uint32) error {
	if index > MaxIndex {
		return ErrOpen
	}
	if index < r.next {
		if _, ok := r.skipped[index]; !ok {
			return fmt.Errorf("%w: index %d of %v", ErrReplay, index, r.sender.Short())
		}
		return nil
	}
	return r.checkGap(index)
}

// Has reports whether the message of the given index can still be opened:
// it is at or past Next, or its key is among the skipped keys.
func (r *ReceiverState) Has(index uint32) bool {
	if index > MaxIndex {
		return false
	}
	if index >= r.next {
		return true
	}
	_, ok := r.skipped[index]
	return ok
}

// Equal reports whether r and o are the same state, in constant time with
// respect to the keys (the number of skipped keys is not secret).
func (r *ReceiverState) Equal(o *ReceiverState) bool {
	if r == nil || o == nil {
		return r == o
	}
	a, _ := r.MarshalBinary()
	b, _ := o.MarshalBinary()
	defer clear(a)
	defer clear(b)
	return subtle.ConstantTimeCompare(a, b) == 1
}

// String returns "[redacted]".
func (r *ReceiverState) String() string { return "[redacted]" }

// GoString returns "[redacted]".
func (r *ReceiverState) GoString() string { return "[redacted]" }

// LogValue logs "[redacted]".
func (r *ReceiverState) LogValue() slog.Value { return slog.StringValue("[redacted]") }

var (
	_ slog.LogValuer = (*SenderState)(nil)
	_ slog.LogValuer = (*ReceiverState)(nil)
	_ fmt.Stringer   = (*SenderState)(nil)
	_ fmt.Stringer   = (*ReceiverState)(nil)
)
