package storage

import (
	"bytes"
	"errors"
	"testing"
)

// TestRecordQueue: entries survive a reopen, deletions stay deleted, and an oversized value writes
// nothing.
func TestRecordQueue(t *testing.T) {
	s, dir := newStore(t)
	a := RecordQKey{Team: id32(1), ID: opID(2)}
	b := RecordQKey{Team: id32(1), ID: opID(3)}
	if err := s.UpdateRecordQ([]RecordQOp{{Key: a, Value: []byte("a1")}, {Key: b, Value: []byte("b1")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRecordQ([]RecordQOp{{Key: a, Value: []byte("a2")}, {Key: b}}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, maxRecordQValue+1)
	if err := s.UpdateRecordQ([]RecordQOp{{Key: b, Value: []byte("b2")}, {Key: a, Value: big}}); !errors.Is(err, ErrBadKey) {
		t.Errorf("oversized value: %v; want ErrBadKey", err)
	}
	s = reopen(t, s, dir)
	got := map[RecordQKey][]byte{}
	if err := s.RecordQ(func(k RecordQKey, v []byte) error { got[k] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !bytes.Equal(got[a], []byte("a2")) {
		t.Errorf("after reopen: %q; want only a = a2", got)
	}
}
