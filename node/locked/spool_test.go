package locked

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestSpoolRoundTripAndSealed(t *testing.T) {
	pub, priv, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sealed-inbox")
	s, err := CreateSpool(path, pub)
	if err != nil {
		t.Fatal(err)
	}
	recs := []Record{{Topic: "fm4/abc", From: "peer-1", Raw: []byte("envelope one, patient MRN-1")}, {Topic: "fm4/def", From: "p2", Raw: []byte("two")}}
	for _, r := range recs {
		if err := s.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if len(raw) == 0 || containsAny(raw, "MRN-1", "fm4/abc", "peer-1") {
		t.Fatal("the spool file is empty or holds a record in the clear")
	}
	var got []Record
	bad, err := ReadSpool(path, pub, priv, func(r Record) error { got = append(got, r); return nil })
	if err != nil || bad != 0 || len(got) != 2 || string(got[0].Raw) != string(recs[0].Raw) || got[1].Topic != "fm4/def" || got[1].From != "p2" {
		t.Fatalf("ReadSpool: %+v, bad %d, %v", got, bad, err)
	}
	otherPub, otherPriv, _ := NewKey()
	bad, err = ReadSpool(path, otherPub, otherPriv, func(Record) error { t.Fatal("a record opened with another key"); return nil })
	if err != nil || bad != 2 {
		t.Fatalf("with another key: bad %d, %v; want 2 unreadable", bad, err)
	}
	// A truncated tail (a crash mid-append) ends the read after the whole records.
	if err := os.WriteFile(path, raw[:len(raw)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	got = nil
	if _, err := ReadSpool(path, pub, priv, func(r Record) error { got = append(got, r); return nil }); err != nil || len(got) != 1 {
		t.Fatalf("truncated: %d records, %v; want the first", len(got), err)
	}
}

func containsAny(b []byte, s ...string) bool {
	for _, x := range s {
		if bytes.Contains(b, []byte(x)) {
			return true
		}
	}
	return false
}

// FuzzDecodeRecord feeds the record decoder what a box opened (a spool written by this device, but
// the decoder must not trust it either).
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{3, 'a', 'b', 'c', 1, 'p', 'x'})
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := decodeRecord(b)
		if ok && len(r.Topic)+len(r.From)+len(r.Raw) > len(b) {
			t.Fatal("decoded more than the input")
		}
	})
}
