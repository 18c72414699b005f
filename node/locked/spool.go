package locked

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/nacl/box"

	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Spool limits.
const (
	// MaxSpool is the most bytes the spool file grows to; envelopes beyond it are not kept (the
	// reconciliation after unlock brings them).
	MaxSpool = 32 << 20
	// maxRecord bounds one sealed record: an envelope, its topic name and sender, and the box.
	maxRecord = envelope.MaxSize + 512
)

// ErrSpoolFull is returned by Spool.Add once MaxSpool is reached.
var ErrSpoolFull = errors.New("locked: the sealed inbox is full")

// Record is one envelope kept while locked: the gossip topic it came on, the peer that sent it, and
// the envelope as it travelled.
type Record struct {
	Topic string
	From  peer.ID
	Raw   []byte
}

// Spool appends records to a file, each sealed (NaCl's anonymous box: X25519, XSalsa20-Poly1305) to a
// public key whose private half is in the locked store. The file holds nothing a thief without the
// passphrase can open. Format: repeated (u32 BE length | sealed record); a record is
// uvarint len | topic | uvarint len | peer id | envelope. Safe for concurrent use.
type Spool struct {
	mu   sync.Mutex
	f    *os.File
	pub  [32]byte
	size int64
}

// CreateSpool opens (appending) the spool at path, sealing to pub.
func CreateSpool(path string, pub *[32]byte) (*Spool, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locked: open the sealed inbox: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locked: open the sealed inbox: %w", err)
	}
	return &Spool{f: f, pub: *pub, size: fi.Size()}, nil
}

// Add seals r and appends it, durably (fsync).
func (s *Spool) Add(r Record) error {
	var plain []byte
	plain = binary.AppendUvarint(plain, uint64(len(r.Topic)))
	plain = append(plain, r.Topic...)
	plain = binary.AppendUvarint(plain, uint64(len(r.From)))
	plain = append(plain, r.From...)
	plain = append(plain, r.Raw...)
	sealed, err := box.SealAnonymous(binary.BigEndian.AppendUint32(nil, 0), plain, &s.pub, rand.Reader)
	if err != nil {
		return fmt.Errorf("locked: seal: %w", err)
	}
	binary.BigEndian.PutUint32(sealed, uint32(len(sealed)-4))
	if len(sealed)-4 > maxRecord {
		return errors.New("locked: envelope too large")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return os.ErrClosed
	}
	if s.size+int64(len(sealed)) > MaxSpool {
		return ErrSpoolFull
	}
	if _, err := s.f.Write(sealed); err != nil {
		return fmt.Errorf("locked: write the sealed inbox: %w", err)
	}
	s.size += int64(len(sealed))
	return s.f.Sync()
}

// Close closes the file. Idempotent.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// ReadSpool opens every record of the spool at path with the key pair (pub, priv) and calls fn for
// each, in order. A missing file has no records. A record that does not open or decode is skipped
// (counted in the returned bad); a truncated tail (a crash mid-append) ends the read.
func ReadSpool(path string, pub, priv *[32]byte, fn func(Record) error) (bad int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("locked: open the sealed inbox: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return bad, nil
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxRecord {
			return bad + 1, nil
		}
		sealed := make([]byte, n)
		if _, err := io.ReadFull(r, sealed); err != nil {
			return bad, nil
		}
		plain, ok := box.OpenAnonymous(nil, sealed, pub, priv)
		if !ok {
			bad++
			continue
		}
		rec, ok := decodeRecord(plain)
		if !ok {
			bad++
			continue
		}
		if err := fn(rec); err != nil {
			return bad, err
		}
	}
}

func decodeRecord(b []byte) (Record, bool) {
	tl, k := binary.Uvarint(b)
	if k <= 0 || tl > uint64(len(b)-k) {
		return Record{}, false
	}
	b = b[k:]
	topic := string(b[:tl])
	b = b[tl:]
	pl, k := binary.Uvarint(b)
	if k <= 0 || pl > uint64(len(b)-k) {
		return Record{}, false
	}
	b = b[k:]
	from := peer.ID(b[:pl])
	return Record{Topic: topic, From: from, Raw: append([]byte(nil), b[pl:]...)}, true
}

// NewKey makes the spool's key pair.
func NewKey() (pub, priv *[32]byte, err error) { return box.GenerateKey(rand.Reader) }
