package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Keyring file layout (DIR/keyring), all integers big-endian:
//
//	offset size
//	0      1    version (keyringVersion = 1)
//	1      4    Argon2id time (iterations)
//	5      4    Argon2id memory, KiB
//	9      1    Argon2id threads
//	10     16   salt
//	26     24   XChaCha20-Poly1305 nonce
//	50     48   sealed data key (32 bytes + 16-byte tag)
//
// The first 50 bytes (the header) are the AEAD's associated data, so the
// parameters and salt cannot be changed without the open failing. The KEK is
// Argon2id(passphrase, salt, time, memory, threads, 32).
const (
	keyringName    = "keyring"
	keyringVersion = 1

	dataKeySize      = 32 // AES-256, what Badger's WithEncryptionKey wants
	saltSize         = 16
	keyringHeaderLen = 1 + 4 + 4 + 1 + saltSize + chacha20poly1305.NonceSizeX
	keyringLen       = keyringHeaderLen + dataKeySize + chacha20poly1305.Overhead
)

// KDFParams are the Argon2id parameters that derive the key wrapping the data
// key from the passphrase. They are stored in the keyring, so Open always uses
// the ones the store was created with.
type KDFParams struct {
	Time      uint32 // iterations; 0 = 3
	MemoryKiB uint32 // memory in KiB; 0 = 64 MiB (65536)
	Threads   uint8  // parallelism; 0 = 2
}

// Defaults and the bounds the keyring decoder accepts. The upper bounds keep
// a tampered keyring from making Open allocate or spin without limit.
const (
	defaultKDFTime    = 3
	defaultKDFMemory  = 64 << 10 // KiB = 64 MiB
	defaultKDFThreads = 2

	maxKDFTime    = 64
	maxKDFMemory  = 1 << 20 // KiB = 1 GiB
	maxKDFThreads = 64
)

// withDefaults fills zero fields with the defaults.
func (p KDFParams) withDefaults() KDFParams {
	if p.Time == 0 {
		p.Time = defaultKDFTime
	}
	if p.MemoryKiB == 0 {
		p.MemoryKiB = defaultKDFMemory
	}
	if p.Threads == 0 {
		p.Threads = defaultKDFThreads
	}
	return p
}

func (p KDFParams) validate() error {
	switch {
	case p.Time < 1 || p.Time > maxKDFTime:
		return fmt.Errorf("%w: kdf time %d out of range [1, %d]", ErrBadOptions, p.Time, maxKDFTime)
	case p.Threads < 1 || p.Threads > maxKDFThreads:
		return fmt.Errorf("%w: kdf threads %d out of range [1, %d]", ErrBadOptions, p.Threads, maxKDFThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemory:
		return fmt.Errorf("%w: kdf memory %d KiB out of range [8*threads, %d]", ErrBadOptions, p.MemoryKiB, maxKDFMemory)
	}
	return nil
}

// keyring is the decoded keyring file.
type keyring struct {
	params KDFParams
	salt   [saltSize]byte
	nonce  [chacha20poly1305.NonceSizeX]byte
	sealed [dataKeySize + chacha20poly1305.Overhead]byte
}

// marshal encodes k in the layout above.
func (k *keyring) marshal() []byte {
	b := make([]byte, 0, keyringLen)
	b = append(b, keyringVersion)
	b = binary.BigEndian.AppendUint32(b, k.params.Time)
	b = binary.BigEndian.AppendUint32(b, k.params.MemoryKiB)
	b = append(b, k.params.Threads)
	b = append(b, k.salt[:]...)
	b = append(b, k.nonce[:]...)
	b = append(b, k.sealed[:]...)
	return b
}

// unmarshalKeyring decodes a keyring file. It never panics; every failure
// wraps ErrCorrupt.
func unmarshalKeyring(b []byte) (*keyring, error) {
	if len(b) != keyringLen {
		return nil, fmt.Errorf("%w: keyring is %d bytes, want %d", ErrCorrupt, len(b), keyringLen)
	}
	if b[0] != keyringVersion {
		return nil, fmt.Errorf("%w: keyring version %d, want %d", ErrCorrupt, b[0], keyringVersion)
	}
	k := &keyring{params: KDFParams{
		Time:      binary.BigEndian.Uint32(b[1:5]),
		MemoryKiB: binary.BigEndian.Uint32(b[5:9]),
		Threads:   b[9],
	}}
	if err := k.params.validate(); err != nil {
		return nil, fmt.Errorf("%w: keyring: %w", ErrCorrupt, err)
	}
	b = b[10:]
	b = b[copy(k.salt[:], b):]
	b = b[copy(k.nonce[:], b):]
	copy(k.sealed[:], b)
	return k, nil
}

func deriveKEK(passphrase []byte, salt []byte, p KDFParams) []byte {
	return argon2.IDKey(passphrase, salt, p.Time, p.MemoryKiB, p.Threads, chacha20poly1305.KeySize)
}

// newKeyring draws a fresh data key and salt from rand and wraps the key.
func newKeyring(rand io.Reader, passphrase []byte, p KDFParams) (*keyring, []byte, error) {
	k := &keyring{params: p}
	dataKey := make([]byte, dataKeySize)
	for _, buf := range [][]byte{dataKey, k.salt[:], k.nonce[:]} {
		if _, err := io.ReadFull(rand, buf); err != nil {
			return nil, nil, fmt.Errorf("storage: read random: %w", err)
		}
	}
	kek := deriveKEK(passphrase, k.salt[:], p)
	defer clear(kek)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: keyring cipher: %w", err)
	}
	header := k.marshal()[:keyringHeaderLen]
	aead.Seal(k.sealed[:0], k.nonce[:], dataKey, header)
	return k, dataKey, nil
}

// unwrap returns the data key, or ErrWrongPassphrase when the AEAD fails
// (wrong passphrase or a tampered file: the two are indistinguishable).
func (k *keyring) unwrap(passphrase []byte) ([]byte, error) {
	kek := deriveKEK(passphrase, k.salt[:], k.params)
	defer clear(kek)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("storage: keyring cipher: %w", err)
	}
	header := k.marshal()[:keyringHeaderLen]
	dataKey, err := aead.Open(nil, k.nonce[:], k.sealed[:], header)
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return dataKey, nil
}

// readKeyring reads and decodes DIR/keyring. A missing file is
// ErrNotInitialized; a file larger than a keyring is refused before reading.
func readKeyring(dir string) (*keyring, error) {
	f, err := os.Open(filepath.Join(dir, keyringName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open keyring: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, keyringLen+1))
	if err != nil {
		return nil, fmt.Errorf("storage: read keyring: %w", err)
	}
	return unmarshalKeyring(b)
}

// writeKeyring writes DIR/keyring atomically: a temporary file in DIR, mode
// 0600, written and fsynced, renamed over the keyring, then DIR fsynced so the
// rename itself survives a power loss.
func writeKeyring(dir string, k *keyring) (err error) {
	f, err := os.CreateTemp(dir, "."+keyringName+"-*") // mode 0600
	if err != nil {
		return fmt.Errorf("storage: write keyring: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("storage: write keyring: %w", err)
	}
	if _, err = f.Write(k.marshal()); err != nil {
		return fmt.Errorf("storage: write keyring: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("storage: sync keyring: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("storage: close keyring: %w", err)
	}
	if err = os.Rename(tmp, filepath.Join(dir, keyringName)); err != nil {
		return fmt.Errorf("storage: rename keyring: %w", err)
	}
	return syncDir(dir)
}

// shredKeyring overwrites DIR/keyring with zeros, fsyncs it, removes it and
// fsyncs DIR. Stale temporary keyring files are removed too. A missing keyring
// is not an error. Overwriting is best effort: flash translation layers and
// copy-on-write file systems may keep the old blocks; removing the file is
// what makes Open refuse the store.
func shredKeyring(dir string) error {
	path := filepath.Join(dir, keyringName)
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		_, werr := f.Write(make([]byte, keyringLen))
		serr := f.Sync()
		cerr := f.Close()
		if err := errors.Join(werr, serr, cerr); err != nil {
			return fmt.Errorf("storage: overwrite keyring: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: overwrite keyring: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: remove keyring: %w", err)
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "."+keyringName+"-*"))
	for _, p := range stale {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("storage: remove keyring: %w", err)
		}
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storage: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: sync dir: %w", err)
	}
	return nil
}
