package envelope

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// goldenEnvelopes returns the fixture's create, commit and two chain-form
// envelopes (alice at index 0, bob at index 3), named.
func goldenEnvelopes(t testing.TB) (*fixture, []string, [][]byte) {
	f := newFixture(t)
	chainA, _ := f.sealChain(t, f.msgA, 0)
	chainB, _ := f.sealChain(t, f.msgB, 3)
	names := []string{"create", "commit", "chainA", "chainB"}
	return f, names, [][]byte{f.createEnv.Marshal(), f.commitE.Marshal(), chainA.Marshal(), chainB.Marshal()}
}

// goldenFile is the golden file of this build: noseal.golden is written and
// checked by `go test -tags fieldmesh_noseal`, and only checked to be
// refused by a normal build.
func goldenFile() string {
	if NoSeal {
		return filepath.Join("testdata", "noseal.golden")
	}
	return filepath.Join("testdata", "envelopes.golden")
}

func TestGolden(t *testing.T) {
	f, names, envs := goldenEnvelopes(t)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# envelope encodings (version 9), from fixed seeds (noseal build: %v).\n", NoSeal)
	fmt.Fprintf(&buf, "# Regenerate with: go test -run TestGolden -update (and -tags fieldmesh_noseal for noseal.golden)\n")
	fmt.Fprintf(&buf, "team %x\n", f.team[:])
	bob, _ := f.bob.MarshalBinary()
	fmt.Fprintf(&buf, "bob %x\n", bob) // a recipient's private keys (test keys only)
	fmt.Fprintf(&buf, "k1 %x\n", f.k1.Bytes())
	fmt.Fprintf(&buf, "k2 %x\n", f.k2.Bytes())
	for i, e := range envs {
		fmt.Fprintf(&buf, "%s %x\n", names[i], e)
	}
	want := buf.Bytes()
	path := goldenFile()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		if !NoSeal {
			writeCorpus(t, envs)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the envelopes made now (an encoding changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
	// Open the committed bytes with the committed keys.
	vals := parseGolden(t, got)
	team := crdt.TeamID(vals["team"])
	dev, err := identity.UnmarshalDevice(vals["bob"])
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := seal.EpochKeyFromBytes(vals["k1"])
	k2, _ := seal.EpochKeyFromBytes(vals["k2"])
	for _, name := range names {
		if vals[name][0]>>4 != version {
			t.Errorf("%s: first byte %#x; want version %d in its top 4 bits", name, vals[name][0], version)
		}
		e, err := Unmarshal(TopicOf(team), vals[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var op *crdt.Op
		switch name {
		case "create":
			if _, _, err := OpenBox(e, dev, team); !errors.Is(err, ErrNotRecipient) {
				t.Errorf("create: bob got %v; want ErrNotRecipient", err)
			}
			op, _, err = OpenCommit(e, OuterKey(k1), team)
		case "commit":
			var k seal.EpochKey
			if k, _, err = OpenBox(e, dev, team); err == nil {
				if !k.Equal(k2) {
					t.Errorf("commit: bob's box holds another key")
				}
				op, _, err = OpenCommit(e, OuterKey(k), team)
			}
		default:
			var c *Chain
			if c, err = OpenChain(e, OuterKey(k2), team, f.list()); err == nil {
				op, err = c.Open(senderkey.NewReceiver(k2, c.Sender))
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h := sha256.Sum256(op.MarshalContent()); op.ID() != e.ID || crdt.OpID(h[:crdt.IDSize]) != e.ID || op.Verify() != nil {
			t.Errorf("%s: the header id is not the SHA-256 of the op's content (cut to crdt.IDSize), or the op's seal does not verify", name)
		}
	}
}

// TestNoSealRefused checks that a normal build cannot open the envelopes
// of a fieldmesh_noseal build (committed in testdata/noseal.golden), and
// that their plaintext is visible in them.
func TestNoSealRefused(t *testing.T) {
	if NoSeal {
		t.Skip("noseal build")
	}
	b, err := os.ReadFile(filepath.Join("testdata", "noseal.golden"))
	if err != nil {
		t.Fatal(err)
	}
	vals := parseGolden(t, b)
	f := newFixture(t) // deterministic: the recipient list of the golden commit
	team := crdt.TeamID(vals["team"])
	dev, _ := identity.UnmarshalDevice(vals["bob"])
	k1, _ := seal.EpochKeyFromBytes(vals["k1"])
	k2, _ := seal.EpochKeyFromBytes(vals["k2"])
	if !bytes.Contains(vals["chainA"], []byte("Bed 4: review before noon")) || !bytes.Contains(vals["create"], []byte("Ward 7")) {
		t.Errorf("noseal.golden: want plaintext visible in the noseal envelopes")
	}
	for _, name := range []string{"chainA", "chainB"} {
		e, err := Unmarshal(TopicOf(team), vals[name])
		if err != nil {
			t.Fatalf("%s: the layout must be that of a normal build: %v", name, err)
		}
		// The outer layer is in the clear: read as a stream cipher's output
		// it is garbage, which the signature refuses.
		if _, err := OpenChain(e, OuterKey(k2), team, f.list()); !errors.Is(err, ErrBadSeal) {
			t.Errorf("%s: got %v; want ErrBadSeal", name, err)
		}
	}
	e, err := Unmarshal(TopicOf(team), vals["commit"])
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := OpenBox(e, dev, team) // the boxes are sealed in both builds
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenCommit(e, OuterKey(k), team); !errors.Is(err, ErrOpen) {
		t.Errorf("commit: got %v; want ErrOpen", err)
	}
	e, _ = Unmarshal(TopicOf(team), vals["create"])
	if _, _, err := OpenCommit(e, OuterKey(k1), team); !errors.Is(err, ErrOpen) {
		t.Errorf("create: got %v; want ErrOpen", err)
	}
}

func parseGolden(t testing.TB, b []byte) map[string][]byte {
	t.Helper()
	vals := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "#") {
			k, v, _ := strings.Cut(line, " ")
			var err error
			if vals[k], err = hex.DecodeString(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	return vals
}

// writeCorpus rewrites the seeds (files seed-*) of the committed corpus of
// FuzzEnvelope: the golden envelopes, and a few cut or changed where the
// layout is checked. Inputs the fuzzer found (other names) are kept.
func writeCorpus(t *testing.T, envs [][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzEnvelope")
	old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := slices.Clone(envs)
	v3 := bytes.Clone(envs[2])
	v3[0] = 3
	commitV3 := bytes.Clone(envs[1])
	commitV3[0] = 3
	counted := append(bytes.Clone(envs[2][:HeaderSize]), 0x81, 0x01) // a counter of 129
	counted[0] |= hdrCounter
	counted = append(counted, envs[2][HeaderSize:]...)
	seeds = append(seeds, v3, commitV3, counted, envs[1][:HeaderSize+1+BoxSize], envs[2][:minChain], envs[0][:HeaderSize+1])
	for _, s := range seeds {
		name := fmt.Sprintf("seed-%x", sha256.Sum256(s))[:21]
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzEnvelope: Unmarshal never panics and round-trips what it accepts;
// the open functions never panic, return nothing with an error, never
// change a receiver state they refuse, and accept only ops consistent
// with the envelope and sealed by their author.
func FuzzEnvelope(f *testing.F) {
	fx, _, envs := goldenEnvelopes(f)
	for _, e := range envs {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(TopicOf(fx.team), b)
		if err != nil {
			if e != nil {
				t.Fatalf("got an envelope and error %v", err)
			}
			return
		}
		if got := e.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity")
		}
		var ops []*crdt.Op
		switch e.Form() {
		case FormChain:
			c, err := OpenChain(e, OuterKey(fx.k2), fx.team, fx.list())
			if err != nil {
				if c != nil {
					t.Fatalf("got a chain and error %v", err)
				}
				return
			}
			if !crdt.VerifySeal(fx.team, c.Sender, e.ID, c.Seal()) {
				t.Fatalf("OpenChain accepted a seal that does not verify")
			}
			r := senderkey.NewReceiver(fx.k2, c.Sender)
			before, _ := r.MarshalBinary()
			peeked, err := c.Peek(r)
			if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
				t.Fatalf("Peek changed the receiver state")
			}
			op, err2 := c.Open(r)
			if (err == nil) != (err2 == nil) {
				t.Fatalf("Peek and Open disagree: %v and %v", err, err2)
			}
			if err2 != nil {
				if op != nil || peeked != nil {
					t.Fatalf("got an op and error %v", err2)
				}
				if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
					t.Fatalf("a refused Open changed the receiver state")
				}
				return
			}
			if op.Author != c.Sender || isCommitKind(op.Kind) || op.Seal.Index != c.Index || op.Seal.Epoch != e.Epoch || op.ID() != peeked.ID() {
				t.Fatalf("Chain.Open accepted an op of another author, kind or position")
			}
			ops = append(ops, op)
		case FormCommit:
			if k, _, err := OpenBox(e, fx.bob, fx.team); err == nil {
				if op, _, err := OpenCommit(e, OuterKey(k), fx.team); err == nil {
					ops = append(ops, op)
				}
			}
			if op, _, err := OpenCommit(e, OuterKey(fx.k1), fx.team); err == nil {
				ops = append(ops, op)
			}
			for _, op := range ops {
				if !isCommitKind(op.Kind) || op.Seal.Epoch != e.Epoch || op.Seal.Index != 0 {
					t.Fatalf("OpenCommit accepted a %v op sealed at %08x/%d", op.Kind, op.Seal.Epoch, op.Seal.Index)
				}
			}
		default:
			t.Fatalf("Unmarshal accepted form %v", e.Form())
		}
		for _, op := range ops {
			if op.ID() != e.ID || op.Time != e.Time || op.Team != fx.team || op.Verify() != nil {
				t.Fatalf("an open function accepted an inconsistent op")
			}
		}
	})
}
