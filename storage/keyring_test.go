package storage

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyringRoundtrip(t *testing.T) {
	k, key, err := newKeyring(rand.Reader, []byte("pass"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	b := k.marshal()
	if len(b) != keyringLen {
		t.Fatalf("keyring is %d bytes; want %d", len(b), keyringLen)
	}
	k2, err := unmarshalKeyring(b)
	if err != nil {
		t.Fatal(err)
	}
	if *k2 != *k {
		t.Errorf("decoded keyring differs: got %+v; want %+v", k2, k)
	}
	got, err := k2.unwrap([]byte("pass"))
	if err != nil || !bytes.Equal(got, key) {
		t.Errorf("unwrap = %x, %v; want the data key", got, err)
	}
	if _, err := k2.unwrap([]byte("Pass")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("unwrap with a wrong passphrase: got %v; want ErrWrongPassphrase", err)
	}
}

func TestKeyringTampered(t *testing.T) {
	k, _, err := newKeyring(rand.Reader, []byte("pass"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	good := k.marshal()
	tests := []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"empty", func([]byte) []byte { return nil }, ErrCorrupt},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, ErrCorrupt},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, ErrCorrupt},
		{"version 2", func(b []byte) []byte { b[0] = 2; return b }, ErrCorrupt},
		{"time 0", func(b []byte) []byte { copy(b[1:5], []byte{0, 0, 0, 0}); return b }, ErrCorrupt},
		{"memory 4 GiB", func(b []byte) []byte { copy(b[5:9], []byte{0, 0x40, 0, 0}); return b }, ErrCorrupt},
		{"threads 0", func(b []byte) []byte { b[9] = 0; return b }, ErrCorrupt},
		// Well-formed but altered: the AEAD refuses.
		{"time +1", func(b []byte) []byte { b[4]++; return b }, ErrWrongPassphrase},
		{"salt", func(b []byte) []byte { b[10] ^= 1; return b }, ErrWrongPassphrase},
		{"nonce", func(b []byte) []byte { b[30] ^= 1; return b }, ErrWrongPassphrase},
		{"sealed key", func(b []byte) []byte { b[60] ^= 1; return b }, ErrWrongPassphrase},
		{"tag", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, ErrWrongPassphrase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.edit(bytes.Clone(good))
			k, err := unmarshalKeyring(b)
			if err == nil {
				_, err = k.unwrap([]byte("pass"))
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
}

func TestOpenTamperedKeyringFile(t *testing.T) {
	s, dir := newStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, keyringName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		b    []byte
		want error
	}{
		{append(bytes.Clone(good), make([]byte, 1<<20)...), ErrCorrupt}, // oversized: refused before reading it all
		{good[:10], ErrCorrupt},
	} {
		if err := os.WriteFile(path, tt.b, 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := Open(dir, testOptions("correct horse")); !errors.Is(err, tt.want) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Open with a %d-byte keyring: got %v; want %v", len(tt.b), err, tt.want)
		}
	}
}

func TestKDFDefaults(t *testing.T) {
	got := KDFParams{}.withDefaults()
	want := KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 2}
	if got != want {
		t.Errorf("defaults: got %+v; want %+v", got, want)
	}
	if err := got.validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if got := (KDFParams{Time: 1}).withDefaults(); got.Time != 1 || got.MemoryKiB != want.MemoryKiB {
		t.Errorf("partial defaults: got %+v", got)
	}
}

func FuzzKeyring(f *testing.F) {
	k, _, err := newKeyring(rand.Reader, []byte("pass"), cheapKDF)
	if err != nil {
		f.Fatal(err)
	}
	good := k.marshal()
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{keyringVersion})
	f.Add(good[:keyringHeaderLen])
	bad := bytes.Clone(good)
	bad[0] = 2
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := unmarshalKeyring(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if err := k.params.validate(); err != nil {
			t.Fatalf("decoded params do not validate: %v", err)
		}
		if got := k.marshal(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\ngot  %x\nwant %x", got, b)
		}
	})
}
