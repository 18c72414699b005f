package storage

import (
	"bytes"
	"testing"
)

// Close and Wipe overwrite the unwrapped data key the store opened Badger with (Badger's options keep
// that same slice), so a locked device's store object holds no key.
func TestCloseOverwritesDataKey(t *testing.T) {
	for _, how := range []string{"close", "wipe", "reopen and close"} {
		dir := t.TempDir()
		s, err := Create(dir, Options{Passphrase: []byte("pw"), KDF: cheapKDF})
		if err != nil {
			t.Fatal(err)
		}
		if how == "reopen and close" {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(dir, Options{Passphrase: []byte("pw")}); err != nil {
				t.Fatal(err)
			}
		}
		key := s.dataKey
		zero := make([]byte, len(key))
		if len(key) != 32 || bytes.Equal(key, zero) {
			t.Fatalf("%s: the open store's data key is %d bytes, all zero %v: the check cannot fail", how, len(key), bytes.Equal(key, zero))
		}
		if how == "wipe" {
			err = s.Wipe()
		} else {
			err = s.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(key, zero) {
			t.Errorf("%s: the data key is still in memory", how)
		}
	}
}
