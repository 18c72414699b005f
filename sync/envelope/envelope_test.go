package envelope

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func detRand(seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

// fixture is a deterministic team with a key and a few ops.
type fixture struct {
	team crdt.TeamID
	key  seal.EpochKey
	dev  *identity.Device
	ops  []*crdt.Op
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	r := detRand(0xe5e1)
	dev, err := identity.Generate(r)
	if err != nil {
		t.Fatal(err)
	}
	team, err := crdt.NewTeamID(r)
	if err != nil {
		t.Fatal(err)
	}
	key, err := seal.NewEpochKey(r)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 3, 1, 8, 30, 0, 0, time.UTC)
	create := crdt.Create{Name: "Ward 7", Kind: crdt.Clinical, Creator: crdt.MemberInfo{Device: dev.ID(), Noise: dev.NoisePublic(), Name: "Alice", Admin: true}}
	c := crdt.NewOp(dev, team, crdt.MakeHLC(at, 0), nil, crdt.KindCreate, create.Marshal())
	m := crdt.NewOp(dev, team, crdt.MakeHLC(at.Add(time.Second), 0), []crdt.OpID{c.ID()}, crdt.KindMessage,
		crdt.Message{Text: "Bed 4: review before noon", Priority: crdt.Urgent, Patient: "MRN 0042"}.Marshal())
	return fixture{team: team, key: key, dev: dev, ops: []*crdt.Op{c, m}}
}

func TestRoundtrip(t *testing.T) {
	f := newFixture(t)
	for i, op := range f.ops {
		e := Seal(op, 7, f.key)
		if got, want := e.Topic, TopicOf(f.team); got != want {
			t.Errorf("op %d: Topic got %v; want %v", i, got, want)
		}
		if got, want := e.ID, op.ID(); got != want {
			t.Errorf("op %d: ID got %v; want %v", i, got, want)
		}
		if e.Time != op.Time || e.Epoch != 7 {
			t.Errorf("op %d: Time, Epoch got %d, %d; want %d, 7", i, e.Time, e.Epoch, op.Time)
		}
		b := e.Marshal()
		if got, want := len(b), HeaderSize+len(op.Marshal())+seal.Overhead; got != want {
			t.Errorf("op %d: len got %d; want %d", i, got, want)
		}
		if bytes.Contains(b, []byte("Bed 4")) || bytes.Contains(b, []byte("MRN")) || bytes.Contains(b, f.dev.ID().PublicKey()) || bytes.Contains(b, f.team[:]) {
			t.Errorf("op %d: marshalled envelope contains plaintext, author or team id", i)
		}
		e2, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("op %d: Unmarshal: %v", i, err)
		}
		if !reflect.DeepEqual(e2, e) {
			t.Errorf("op %d: Unmarshal got %+v; want %+v", i, e2, e)
		}
		got, err := Open(e2, f.key, f.team)
		if err != nil {
			t.Fatalf("op %d: Open: %v", i, err)
		}
		if !reflect.DeepEqual(got, op) {
			t.Errorf("op %d: Open got %+v; want %+v", i, got, op)
		}
	}
	// Topic as hex and short.
	tp := TopicOf(f.team)
	if got, want := tp.String(), hex.EncodeToString(tp[:]); got != want || tp.Short() != want[:8] || tp.LogValue().String() != want[:8] {
		t.Errorf("Topic strings: got %q %q; want %q", got, tp.Short(), want)
	}
	if got, want := [16]byte(tp), seal.Topic(f.team); got != want {
		t.Errorf("TopicOf: got %x; want seal.Topic %x", got, want)
	}
}

// TestTamperEveryByte changes each byte of a marshalled envelope in turn
// (three ways) and checks that Unmarshal+Open rejects every result.
func TestTamperEveryByte(t *testing.T) {
	f := newFixture(t)
	for _, op := range f.ops {
		b := Seal(op, 3, f.key).Marshal()
		for i := range b {
			for _, x := range []byte{0x01, 0x80, 0xff} {
				c := bytes.Clone(b)
				c[i] ^= x
				if op, err := unmarshalOpen(c, f.key, f.team); err == nil {
					t.Fatalf("byte %d ^ %#x: got op %v, nil; want an error", i, x, op.ID().Short())
				}
			}
		}
		// Truncations and extensions too.
		for n := range len(b) {
			if _, err := unmarshalOpen(b[:n], f.key, f.team); err == nil {
				t.Fatalf("truncated to %d bytes: got nil error; want error", n)
			}
		}
		if _, err := unmarshalOpen(append(bytes.Clone(b), 0), f.key, f.team); err == nil {
			t.Fatalf("extended: got nil error; want error")
		}
		if _, err := unmarshalOpen(b, f.key, f.team); err != nil {
			t.Fatalf("untouched: got %v; want nil", err)
		}
	}
}

func unmarshalOpen(b []byte, key seal.EpochKey, team crdt.TeamID) (*crdt.Op, error) {
	e, err := Unmarshal(b)
	if err != nil {
		return nil, err
	}
	return Open(e, key, team)
}

func TestUnmarshalErrors(t *testing.T) {
	f := newFixture(t)
	good := Seal(f.ops[1], 1, f.key).Marshal()
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only", good[:HeaderSize], ErrShort},
		{"header and short tag", good[:MinSize-1], ErrShort},
		{"too large", make([]byte, MaxSize+1), ErrTooLarge},
		{"version 0", append([]byte{0}, good[1:]...), ErrVersion},
		{"version 2", append([]byte{2}, good[1:]...), ErrVersion},
	}
	for _, tt := range tests {
		e, err := Unmarshal(tt.in)
		if !errors.Is(err, tt.want) || e != nil {
			t.Errorf("%s: got %v, %v; want nil, %v", tt.name, e, err, tt.want)
		}
	}
	// The largest accepted size decodes (and fails to open).
	big := append(bytes.Clone(good[:HeaderSize]), make([]byte, MaxSize-HeaderSize)...)
	e, err := Unmarshal(big)
	if err != nil {
		t.Fatalf("MaxSize: got %v; want nil", err)
	}
	if _, err := Open(e, f.key, f.team); !errors.Is(err, ErrOpen) {
		t.Errorf("MaxSize Open: got %v; want ErrOpen", err)
	}
	// Unmarshal does not alias its input.
	e, _ = Unmarshal(good)
	good[len(good)-1] ^= 1
	if _, err := Open(e, f.key, f.team); err != nil {
		t.Errorf("after changing the input buffer: Open got %v; want nil", err)
	}
}

// sealRaw seals an arbitrary plaintext under an arbitrary header, as a
// malicious member holding the key could.
func sealRaw(key seal.EpochKey, hdr Envelope, pt []byte) *Envelope {
	e := hdr
	e.Ciphertext = seal.Seal(key, nonce(e.ID), e.appendHeader(nil), pt)
	return &e
}

func TestOpenErrors(t *testing.T) {
	f := newFixture(t)
	op := f.ops[1]
	good := Seal(op, 1, f.key)
	other, _ := crdt.NewTeamID(detRand(99))
	otherKey, _ := seal.NewEpochKey(detRand(98))
	otherTeamOp := crdt.NewOp(f.dev, other, op.Time, nil, crdt.KindMessage, op.Body)
	badSig := op.Clone()
	badSig.Sig[5] ^= 1
	hdr := Envelope{Topic: good.Topic, Epoch: 1, ID: op.ID(), Time: op.Time}
	withID := func(id crdt.OpID) Envelope { h := hdr; h.ID = id; return h }
	withTime := func(t crdt.HLC) Envelope { h := hdr; h.Time = t; return h }
	otherTeamHdr := hdr
	otherTeamHdr.ID = otherTeamOp.ID()
	badSigHdr := hdr
	badSigHdr.ID = badSig.ID()
	tests := []struct {
		name string
		e    *Envelope
		key  seal.EpochKey
		team crdt.TeamID
		want error
	}{
		{"good", good, f.key, f.team, nil},
		{"wrong team", good, f.key, other, ErrWrongTopic},
		{"wrong key", good, otherKey, f.team, ErrOpen},
		{"epoch changed", func() *Envelope { e := *good; e.Epoch = 2; return &e }(), f.key, f.team, ErrOpen},
		{"garbage plaintext", sealRaw(f.key, hdr, []byte("not an op")), f.key, f.team, crdt.ErrVersion},
		{"id of another op", sealRaw(f.key, withID(f.ops[0].ID()), op.Marshal()), f.key, f.team, ErrBadOp},
		{"time differs", sealRaw(f.key, withTime(op.Time+1), op.Marshal()), f.key, f.team, ErrBadOp},
		{"op of another team", sealRaw(f.key, otherTeamHdr, otherTeamOp.Marshal()), f.key, f.team, ErrBadOp},
		{"bad signature", sealRaw(f.key, badSigHdr, badSig.Marshal()), f.key, f.team, crdt.ErrBadSignature},
	}
	for _, tt := range tests {
		got, err := Open(tt.e, tt.key, tt.team)
		if tt.want == nil {
			if err != nil || got == nil {
				t.Errorf("%s: got %v, %v; want an op, nil", tt.name, got, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || got != nil {
			t.Errorf("%s: got %v, %v; want nil, %v", tt.name, got, err, tt.want)
		}
	}
}

func goldenEnvelopes(t testing.TB) (fixture, [][]byte) {
	f := newFixture(t)
	var out [][]byte
	for i, op := range f.ops {
		out = append(out, Seal(op, uint32(i+1), f.key).Marshal())
	}
	return f, out
}

func TestGolden(t *testing.T) {
	f, envs := goldenEnvelopes(t)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# envelope encodings (issue #2, version 1), from a fixed seed.\n# Regenerate with: go test -run TestGolden -update\n")
	fmt.Fprintf(&buf, "team %x\n", f.team[:])
	fmt.Fprintf(&buf, "key %x\n", f.key.Bytes())
	for i, e := range envs {
		fmt.Fprintf(&buf, "envelope%d %x\n", i, e)
	}
	want := buf.Bytes()
	path := filepath.Join("testdata", "envelopes.golden")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the envelopes made now (an encoding changed?):\ngot file:\n%s\nwant:\n%s", path, got, want)
	}
	// Open the committed bytes with the committed key.
	vals := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(got))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "#") {
			k, v, _ := strings.Cut(line, " ")
			vals[k], err = hex.DecodeString(v)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	key, err := seal.EpochKeyFromBytes(vals["key"])
	if err != nil {
		t.Fatal(err)
	}
	for i := range envs {
		b := vals[fmt.Sprintf("envelope%d", i)]
		op, err := unmarshalOpen(b, key, crdt.TeamID(vals["team"]))
		if err != nil {
			t.Fatalf("envelope%d: %v", i, err)
		}
		if got, want := op.ID(), crdt.OpID(b[21:53]); got != want {
			t.Errorf("envelope%d: op id got %v; want %v", i, got, want)
		}
		if got, want := sha256.Sum256(op.Marshal()), [32]byte(b[21:53]); got != want {
			t.Errorf("envelope%d: header id is not the SHA-256 of the op", i)
		}
	}
}

func FuzzEnvelope(f *testing.F) {
	fx, envs := goldenEnvelopes(f)
	for _, e := range envs {
		f.Add(e)
	}
	f.Add(envs[0][:HeaderSize])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			if e != nil {
				t.Fatalf("got envelope and error %v", err)
			}
			return
		}
		if got := e.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity")
		}
		op, err := Open(e, fx.key, fx.team)
		if err != nil {
			if op != nil {
				t.Fatalf("got op and error %v", err)
			}
			return
		}
		if op.ID() != e.ID || op.Time != e.Time || op.Team != fx.team || op.Verify() != nil {
			t.Fatalf("Open accepted an inconsistent op")
		}
	})
}

func BenchmarkSealOpen(b *testing.B) {
	f := newFixture(b)
	op := f.ops[1]
	b.Run("Seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = Seal(op, 1, f.key)
		}
	})
	e := Seal(op, 1, f.key)
	b.Run("Open", func(b *testing.B) { // includes the Ed25519 verification
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Open(e, f.key, f.team); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(len(e.Marshal())), "envelope-bytes")
}
