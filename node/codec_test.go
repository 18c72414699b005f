package node

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

func TestTeamRecordRoundTrip(t *testing.T) {
	rec := &teamRecord{}
	rec.ID[0], rec.Genesis[1] = 7, 9
	got, err := unmarshalTeamRecord(rec.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if *got != *rec {
		t.Errorf("round trip changed the record")
	}
	b := rec.marshal()
	for i := 0; i < len(b); i++ {
		if _, err := unmarshalTeamRecord(b[:i]); err == nil {
			t.Errorf("truncated record of %d bytes accepted", i)
		}
	}
	if _, err := unmarshalTeamRecord(append(b, 0)); err == nil {
		t.Error("record with a trailing byte accepted")
	}
	old := append([]byte{1}, b[1:]...)
	if _, err := unmarshalTeamRecord(old); err == nil || !strings.Contains(err.Error(), "earlier fieldmesh") {
		t.Errorf("a version-1 record: %v; want a clear refusal", err)
	}
}

func FuzzTeamRecord(f *testing.F) {
	f.Add((&teamRecord{ID: crdt.TeamID{1}, Genesis: crdt.OpID{2}}).marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := unmarshalTeamRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(rec.marshal(), b) {
			t.Fatal("team record is not canonical")
		}
	})
}
