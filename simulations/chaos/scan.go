package chaos

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// MinNeedle is the length of the shortest needle a Scanner accepts. Needles are indexed by their
// first four bytes; a longer minimum also keeps short, common strings from matching by chance.
const MinNeedle = 8

// scanChunk is how much of a stream Scanner.Reader holds at a time.
const scanChunk = 1 << 20

// A Scanner looks for any of a fixed set of needles in raw bytes. It checks every offset of the
// input against an index of the needles' first four bytes, so its cost grows with the input, not
// with the number of needles. A Scanner is safe for concurrent use once built.
type Scanner struct {
	needles []string
	first2  [1 << 16 / 64]uint64 // bitset of the needles' first two bytes
	byHead  map[uint32][]int     // first four bytes (little endian) -> needle indexes
	longest int
	chunk   int // bytes Reader reads at a time
}

// NewScanner indexes needles. Every needle must be at least MinNeedle bytes; duplicates are
// dropped.
func NewScanner(needles []string) (*Scanner, error) { return NewScannerChunk(needles, scanChunk) }

// NewScannerChunk is NewScanner with Reader (and Files) reading chunk bytes at a time, which must
// be at least the longest needle: small chunks let a test put a needle across a chunk boundary.
func NewScannerChunk(needles []string, chunk int) (*Scanner, error) {
	s := &Scanner{byHead: map[uint32][]int{}, chunk: chunk}
	seen := map[string]bool{}
	for _, n := range needles {
		if len(n) < MinNeedle {
			return nil, fmt.Errorf("chaos: needle %q is shorter than %d bytes", n, MinNeedle)
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		i := len(s.needles)
		s.needles = append(s.needles, n)
		h2 := binary.LittleEndian.Uint16([]byte(n))
		s.first2[h2/64] |= 1 << (h2 % 64)
		h4 := binary.LittleEndian.Uint32([]byte(n))
		s.byHead[h4] = append(s.byHead[h4], i)
		s.longest = max(s.longest, len(n))
	}
	if chunk < s.longest {
		return nil, fmt.Errorf("chaos: chunk %d shorter than the longest needle (%d)", chunk, s.longest)
	}
	return s, nil
}

// Needles returns the number of distinct needles.
func (s *Scanner) Needles() int { return len(s.needles) }

// Bytes reports every occurrence of a needle in b by calling found with the needle's index (see
// Needle).
func (s *Scanner) Bytes(b []byte, found func(needle int)) { s.scan(b, 0, found) }

// scan reports the occurrences in b that end after byte minEnd.
func (s *Scanner) scan(b []byte, minEnd int, found func(needle int)) {
	for i := 0; i+MinNeedle <= len(b); i++ {
		h2 := binary.LittleEndian.Uint16(b[i:])
		if s.first2[h2/64]&(1<<(h2%64)) == 0 {
			continue
		}
		for _, n := range s.byHead[binary.LittleEndian.Uint32(b[i:])] {
			if i+len(s.needles[n]) > minEnd && bytes.HasPrefix(b[i:], []byte(s.needles[n])) {
				found(n)
			}
		}
	}
}

// Needle returns needle number i.
func (s *Scanner) Needle(i int) string { return s.needles[i] }

// Reader scans a stream in chunks that overlap by the longest needle's length minus one, so a
// needle that straddles two chunks is found, and reports each occurrence once, like Bytes. It
// returns the number of bytes read.
func (s *Scanner) Reader(r io.Reader, found func(needle int)) (int64, error) {
	buf := make([]byte, 0, s.chunk+s.longest)
	var total int64
	for {
		// buf starts with the previous chunk's last bytes, already scanned: occurrences that lie
		// wholly inside them were reported then.
		kept := len(buf)
		n, err := io.ReadFull(r, buf[kept:kept+s.chunk])
		buf = buf[:kept+n]
		total += int64(n)
		s.scan(buf, kept, found)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		tail := min(len(buf), s.longest-1)
		copy(buf, buf[len(buf)-tail:])
		buf = buf[:tail]
	}
}

// FileHit is a needle found in a file.
type FileHit struct {
	File   string
	Needle string
}

// Files scans the raw bytes of every regular file under each root, recursively, and returns
// each (file, needle) pair found once, sorted, with the number of files and bytes scanned.
// Sockets, symlinks and other non-regular files are skipped; a root that does not exist is an
// error.
func (s *Scanner) Files(roots ...string) (hits []FileHit, files int, size int64, err error) {
	found := map[FileHit]bool{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := s.Reader(f, func(i int) { found[FileHit{path, s.needles[i]}] = true })
			if err != nil {
				return fmt.Errorf("scanning %s: %w", path, err)
			}
			files++
			size += n
			return nil
		})
		if err != nil {
			return nil, files, size, err
		}
	}
	for h := range found {
		hits = append(hits, h)
	}
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].File != hits[j].File {
			return hits[i].File < hits[j].File
		}
		return hits[i].Needle < hits[j].Needle
	})
	return hits, files, size, nil
}
