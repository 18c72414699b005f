package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// findMarkers returns "file: marker" for every marker found in a file under dir.
func findMarkers(t *testing.T, dir string, markers [][]byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // Badger removed it while we walked (a flushed memtable)
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, m := range markers {
			if bytes.Contains(b, m) {
				hits = append(hits, fmt.Sprintf("%s: %q", path, m))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// TestNoPlaintextOnDisk writes distinctive strings through every keyspace,
// into the write-ahead log and the LSM tables (the value log holds no values:
// TestDeletionIsFinal checks it), then scans every byte under the directory
// for them.
func TestNoPlaintextOnDisk(t *testing.T) {
	s, dir := newStore(t)
	markers := map[string][]byte{
		"envelope":     []byte("ENVELOPE-PLAINTEXT-7f3a"),
		"big envelope": []byte("BIGENVELOPE-PLAINTEXT-9c1d"), // a large value (inline too: see delete.go)
		"team":         []byte("TEAM-STATE-PLAINTEXT-51be"),
		"secret":       []byte("SECRET-VALUE-PLAINTEXT-e0c4"),
		"secret name":  []byte("SECRET-NAME-PLAINTEXT-aa21"),
		"peer":         []byte("PEER-VALUE-PLAINTEXT-3d9f"),
		"peer key":     []byte("PEER-KEY-PLAINTEXT-6b70"),
		"invite":       []byte("INVITE-PLAINTEXT-02ee"),
		"topic":        []byte("TOPIC-PLAINTEX!!"), // 16 bytes: part of every envelope key
		"passphrase":   []byte("correct horse"),
	}
	var all [][]byte
	for _, m := range markers {
		all = append(all, m)
	}

	// The scanner works: it finds a marker in a plaintext file.
	ctl := t.TempDir()
	os.WriteFile(filepath.Join(ctl, "f"), append([]byte("xx"), markers["team"]...), 0o600)
	if hits := findMarkers(t, ctl, all); len(hits) != 1 {
		t.Fatalf("control scan found %v; want one hit", hits)
	}

	var top [16]byte
	copy(top[:], markers["topic"])
	if err := s.PutSecret(string(markers["secret name"]), markers["secret"]); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTeam(id32(1), bytes.Repeat(markers["team"], 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPeer(string(markers["peer key"]), markers["peer"]); err != nil {
		t.Fatal(err)
	}
	if err := s.PutInvite([16]byte{1}, markers["invite"]); err != nil {
		t.Fatal(err)
	}
	big := EnvelopeRecord{Key: EnvelopeKey{Topic: top, Time: 1, ID: opID(-1)}, Data: bytes.Repeat(markers["big envelope"], 4000)}
	if _, err := s.PutEnvelopes([]EnvelopeRecord{big}); err != nil {
		t.Fatal(err)
	}
	// Enough small envelopes (about 12 MiB) to flush memtables into tables.
	for batch := range 12 {
		var recs []EnvelopeRecord
		for i := range 256 {
			n := batch*256 + i
			recs = append(recs, EnvelopeRecord{
				Key:  EnvelopeKey{Topic: top, Time: uint64(n), ID: opID(n)},
				Data: bytes.Repeat(markers["envelope"], 4096/len(markers["envelope"])),
			})
		}
		if _, err := s.PutEnvelopes(recs); err != nil {
			t.Fatal(err)
		}
	}

	openKinds := sizesByExt(dir)
	if hits := findMarkers(t, dir, all); len(hits) > 0 {
		t.Errorf("plaintext on disk while open:\n%v", hits)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if hits := findMarkers(t, dir, all); len(hits) > 0 {
		t.Errorf("plaintext on disk after Close:\n%v", hits)
	}
	// The scans covered every kind of file that holds data.
	closedKinds := sizesByExt(dir)
	t.Logf("bytes by file kind: open %v, closed %v", openKinds, closedKinds)
	for _, k := range []struct {
		ext   string
		sizes map[string]int64
	}{{".mem", openKinds}, {".sst", closedKinds}} {
		if k.sizes[k.ext] == 0 {
			t.Errorf("no %s data was written; the scan did not cover it", k.ext)
		}
	}
}

func sizesByExt(dir string) map[string]int64 {
	sizes := map[string]int64{}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				sizes[filepath.Ext(path)] += info.Size()
			}
		}
		return nil
	})
	return sizes
}
