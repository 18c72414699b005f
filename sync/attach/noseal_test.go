package attach

import (
	"bytes"
	"testing"
)

// TestNoSealLayer: a normal build seals chunks (no plaintext in them); a build with the test-only
// tag fieldmesh_noseal (the chaos run's control) carries the plaintext, so its scans can find it.
// Both open what they sealed.
func TestNoSealLayer(t *testing.T) {
	data := bytes.Repeat([]byte("attachment plaintext marker 0123456789 "), 2000)
	a, chunks, err := Seal(nil, "application/pdf", data)
	if err != nil {
		t.Fatal(err)
	}
	found := bytes.Contains(chunks[0], data[100:164])
	if found != NoSeal {
		t.Errorf("plaintext in a sealed chunk: %v; want %v (NoSeal %v)", found, NoSeal, NoSeal)
	}
	got, err := Open(a, func(i int) ([]byte, error) { return chunks[i], nil })
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Open: %v", err)
	}
}

// skipNoSeal skips tests of the cryptography in a fieldmesh_noseal build, which has none.
func skipNoSeal(t *testing.T) {
	t.Helper()
	if NoSeal {
		t.Skip("a fieldmesh_noseal build does not seal chunks")
	}
}
