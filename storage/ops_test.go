package storage

import (
	"bytes"
	"errors"
	"testing"
)

func TestCommitBatch(t *testing.T) {
	s, dir := newStore(t)
	team := [32]byte{7}
	env := helperRecord(1)
	b := Batch{
		Envelopes: []EnvelopeRecord{env, env}, // a repeat is skipped
		Ops: []OpRecord{
			{Team: team, Time: 20, ID: [IDSize]byte{2}, Data: []byte("op-b")},
			{Team: team, Time: 10, ID: [IDSize]byte{9}, Data: []byte("op-a")},
			{Team: [32]byte{8}, Time: 5, ID: [IDSize]byte{1}, Data: []byte("other team")},
		},
		Secrets: map[string][]byte{"keys/x": []byte("state-1")},
	}
	added, err := s.Commit(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 1 || added[0] != env.Key {
		t.Fatalf("added %v, want just %v", added, env.Key)
	}
	// A second commit adds no envelope but replaces the secret.
	added, err = s.Commit(Batch{Envelopes: []EnvelopeRecord{env}, Secrets: map[string][]byte{"keys/x": []byte("state-2")}})
	if err != nil || len(added) != 0 {
		t.Fatalf("second commit: added %v, err %v", added, err)
	}
	s = reopen(t, s, dir)
	var got [][]byte
	if err := s.Ops(team, func(d []byte) error { got = append(got, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0]) != "op-a" || string(got[1]) != "op-b" {
		t.Fatalf("ops of team after reopen = %q, want [op-a op-b] in time order", got)
	}
	v, err := s.Secret("keys/x")
	if err != nil || !bytes.Equal(v, []byte("state-2")) {
		t.Fatalf("secret = %q, %v", v, err)
	}
	if ok, err := s.HasEnvelope(env.Key.ID); !ok || err != nil {
		t.Fatalf("envelope not stored: %v", err)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Ops(team, func([]byte) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Ops did not stop on fn's error: n=%d err=%v", n, err)
	}
}

func TestCommitRefusesBadSecretName(t *testing.T) {
	s, _ := newStore(t)
	team := [32]byte{1}
	_, err := s.Commit(Batch{
		Ops:     []OpRecord{{Team: team, Time: 1, ID: [IDSize]byte{1}, Data: []byte("x")}},
		Secrets: map[string][]byte{"": []byte("v")},
	})
	if err == nil {
		t.Fatal("empty secret name accepted")
	}
	n := 0
	if err := s.Ops(team, func([]byte) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("a refused batch wrote %d ops (err %v)", n, err)
	}
}
