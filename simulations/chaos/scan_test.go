package chaos

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestScannerBytes(t *testing.T) {
	s, err := NewScanner([]string{"MRN-448812", "Maternity Ward 3", "Maternity Ward 3", "Ward 3 night"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Needles() != 3 {
		t.Errorf("Needles() = %d; want 3 (duplicates dropped)", s.Needles())
	}
	var got []string
	s.Bytes([]byte("xxMaternity Ward 3 night shift, MRN-448812 and MRN-44881 and MRN-448812"), func(i int) {
		got = append(got, s.Needle(i))
	})
	slices.Sort(got)
	want := []string{"MRN-448812", "MRN-448812", "Maternity Ward 3", "Ward 3 night"}
	if !slices.Equal(got, want) {
		t.Errorf("found %q; want %q", got, want)
	}
	if _, err := NewScanner([]string{"short"}); err == nil {
		t.Error("NewScanner accepted a needle shorter than MinNeedle")
	}
}

// TestScannerReader checks that a needle straddling two chunks is found and that one lying in the
// overlap between chunks is reported once.
func TestScannerReader(t *testing.T) {
	long := "a needle that is the longest one"
	s, err := NewScanner([]string{"straddler", "in-overlap", long})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.Write(make([]byte, scanChunk-4))
	buf.WriteString("straddler") // crosses the first chunk boundary
	buf.Write(make([]byte, scanChunk-5-12))
	buf.WriteString("in-overlap") // ends 2 bytes before the second boundary: inside the kept tail
	buf.Write(make([]byte, 2+100))
	buf.WriteString(long) // ends the input
	data := buf.Bytes()
	count := map[string]int{}
	// HalfReader: short reads, so chunks fill over several Read calls.
	n, err := s.Reader(iotest.HalfReader(bytes.NewReader(data)), func(i int) { count[s.Needle(i)]++ })
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) {
		t.Errorf("read %d bytes; want %d", n, len(data))
	}
	for _, needle := range []string{"straddler", "in-overlap", long} {
		if count[needle] != 1 {
			t.Errorf("%q reported %d times; want once", needle, count[needle])
		}
	}
}

func TestScannerFiles(t *testing.T) {
	dir := t.TempDir()
	nested := filepath.Join(dir, "db", "000001.vlog")
	if err := os.MkdirAll(filepath.Dir(nested), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nested, []byte(strings.Repeat("x", 5000)+"Chaos Ward 1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "clean.log"), []byte(strings.Repeat("nothing here\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(nested, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	s, err := NewScanner([]string{"Chaos Ward 1234", "MRN-0000-1"})
	if err != nil {
		t.Fatal(err)
	}
	hits, files, size, err := s.Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []FileHit{{nested, "Chaos Ward 1234"}}
	if !slices.Equal(hits, want) || files != 2 || size != 5015+13000 {
		t.Errorf("Files = %v, %d files, %d bytes; want %v, 2 files, %d bytes", hits, files, size, want, 5015+13000)
	}
	if _, _, _, err := s.Files(filepath.Join(dir, "absent")); err == nil {
		t.Error("Files of a missing root: no error")
	}
}

// TestScannerChunk: a chunk shorter than the longest needle is refused; a small one still finds a
// needle across its boundaries.
func TestScannerChunk(t *testing.T) {
	if _, err := NewScannerChunk([]string{"a needle of 20 bytes"}, 19); err == nil {
		t.Error("chunk shorter than the longest needle accepted")
	}
	s, err := NewScannerChunk([]string{"a needle of 20 bytes"}, 20)
	if err != nil {
		t.Fatal(err)
	}
	data := append(make([]byte, 15), "a needle of 20 bytes"...) // crosses the first boundary
	found := 0
	if _, err := s.Reader(bytes.NewReader(data), func(int) { found++ }); err != nil {
		t.Fatal(err)
	}
	if found != 1 {
		t.Errorf("found %d times; want once", found)
	}
}
