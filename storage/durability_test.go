package storage

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// helperDirEnv tells a re-executed test binary to act as the writer child of
// TestKillDurability, on the store in that directory.
const helperDirEnv = "FIELDMESH_STORAGE_HELPER_DIR"

// helperStartEnv is the number of the child's first envelope, so each round
// writes new ones.
const helperStartEnv = "FIELDMESH_STORAGE_HELPER_START"

func helperRecord(n int) EnvelopeRecord {
	return EnvelopeRecord{
		Key:  EnvelopeKey{Topic: topic(byte(n % 3)), Time: uint64(n), ID: opID(n)},
		Data: fmt.Appendf(nil, "acknowledged envelope %d", n),
	}
}

// TestHelperProcess is the child of TestKillDurability; run directly it skips.
// It writes envelopes in batches of 1 to 3 and prints "ack N ID" for each one
// only after PutEnvelopes returned, i.e. after the fsync, until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("child process of TestKillDurability")
	}
	s, err := Open(dir, testOptions("correct horse"))
	if err != nil {
		t.Fatalf("child: Open: %v", err)
	}
	start, err := strconv.Atoi(os.Getenv(helperStartEnv))
	if err != nil {
		t.Fatalf("child: %s: %v", helperStartEnv, err)
	}
	w := bufio.NewWriter(os.Stdout)
	for n := start; n < start+1_000_000; {
		var batch []EnvelopeRecord
		for range n%3 + 1 {
			batch = append(batch, helperRecord(n))
			n++
		}
		if _, err := s.PutEnvelopes(batch); err != nil {
			t.Fatalf("child: PutEnvelopes: %v", err)
		}
		for _, r := range batch {
			fmt.Fprintf(w, "ack %d %x\n", r.Key.Time, r.Key.ID)
		}
		if err := w.Flush(); err != nil {
			t.Fatalf("child: write ack: %v", err)
		}
	}
	t.Fatal("child: was not killed")
}

// TestKillDurability runs a writer in a child process, kills it with SIGKILL
// after it has acknowledged some envelopes, and checks that every
// envelope acknowledged in this or an earlier round is in the reopened store.
// SIGKILL loses what only the process held; the kernel's page cache survives,
// so this proves write-before-acknowledge and crash recovery, not the fsync
// itself (that would need a power cut, e.g. dm-flakey in a VM).
func TestKillDurability(t *testing.T) {
	if os.Getenv(helperDirEnv) != "" {
		t.Skip("in the child")
	}
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Create(dir, testOptions("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	const perRound = 200
	acked := make(map[int][IDSize]byte) // every acknowledged envelope, across rounds
	// Kill the same store several times.
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperDirEnv+"="+dir, fmt.Sprintf("%s=%d", helperStartEnv, round*1_000_000))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := perRound * (round + 1)
		var other []string
		sc := bufio.NewScanner(stdout)
		for len(acked) < want && sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				other = append(other, sc.Text())
				continue
			}
			n, err := strconv.Atoi(f[1])
			b, err2 := hex.DecodeString(f[2])
			if err != nil || err2 != nil || len(b) != IDSize {
				t.Fatalf("bad ack line %q", sc.Text())
			}
			acked[n] = [IDSize]byte(b)
		}
		// SIGKILL: no deferred code, no Close, no flush runs in the child.
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if len(acked) < want {
			t.Fatalf("round %d: child stopped after %d acks: %v\nstdout: %s\nstderr: %s",
				round, len(acked), sc.Err(), strings.Join(other, "\n"), stderr.String())
		}

		s, err := Open(dir, testOptions("correct horse"))
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		lost := 0
		for n, id := range acked {
			r, err := s.Envelope(id)
			want := helperRecord(n)
			if err != nil || r.Key != want.Key || !bytes.Equal(r.Data, want.Data) {
				lost++
				if lost <= 5 {
					t.Errorf("round %d: acknowledged envelope %d: %v, %q", round, n, err, r.Data)
				}
			}
		}
		if lost > 0 {
			t.Errorf("round %d: lost %d of %d acknowledged envelopes", round, lost, len(acked))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
