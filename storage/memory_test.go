package storage

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCreateMemory: a store made in memory keeps and returns what it is given, writes nothing to
// the working directory (no keyring, no database), and its Wipe closes it without touching files
// (a Wipe that shredded "keyring" in the working directory would destroy an unrelated store).
func TestCreateMemory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile(keyringName, []byte("someone else's keyring"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := CreateMemory(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutSecret("name", []byte("Nurse Phiri")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Secret("name")
	if err != nil || string(got) != "Nurse Phiri" {
		t.Fatalf("Secret = %q, %v; want the value put", got, err)
	}
	if _, err := s.Collect(); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if err := s.Wipe(); err != nil {
		t.Fatalf("Wipe: %v", err)
	}
	if _, err := s.Secret("name"); err == nil {
		t.Error("a wiped in-memory store still answers")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != keyringName {
		t.Errorf("working directory holds %v; want only the keyring put there before", ents)
	}
	if b, err := os.ReadFile(filepath.Join(dir, keyringName)); err != nil || string(b) != "someone else's keyring" {
		t.Errorf("the unrelated keyring was changed: %q, %v", b, err)
	}
}
