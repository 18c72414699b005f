package audit

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	stdsync "sync"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

var tamperSeed = flag.Uint64("audit.seed", 0, "seed of TestTamperDetected (0: a random one, logged)")

// memStore is an in-memory Store.
type memStore struct {
	mu       stdsync.Mutex
	secrets  map[string][]byte
	settings map[string][]byte
	failPut  bool
}

func newMemStore() *memStore {
	return &memStore{secrets: map[string][]byte{}, settings: map[string][]byte{}}
}

func (m *memStore) Secret(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.secrets[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (m *memStore) PutSecret(name string, v []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.secrets[name] = bytes.Clone(v)
	return nil
}

func (m *memStore) Setting(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.settings[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (m *memStore) PutSetting(name string, v []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPut {
		return errors.New("store is failing")
	}
	m.settings[name] = bytes.Clone(v)
	return nil
}

func fill(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// sampleEvents are events of every kind.
func sampleEvents(n int, r *rand.Rand) []Event {
	var out []Event
	for i := range n {
		e := Event{Kind: Kind(1 + i%int(maxKind)), Time: time.Unix(1_700_000_000+int64(i)*61, int64(i)*1000).UTC()}
		fill(r, e.Team[:])
		fill(r, e.Actor[:])
		switch e.Kind {
		case Membership:
			e.Epoch = uint32(i + 2)
			for j := range 1 + r.IntN(3) {
				c := Change{Action: Action(1 + j%5)}
				fill(r, c.Device[:])
				e.Changes = append(e.Changes, c)
			}
		case Deleted, Exported:
			e.Count = uint32(r.IntN(50))
			e.Subject = Patient
		case Filed:
			fill(r, e.Op[:])
		}
		out = append(out, e)
	}
	return out
}

func openLog(t *testing.T, path string, st Store) *Log {
	t.Helper()
	l, err := Open(path, st, Config{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestAppendVerifyReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	st := newMemStore()
	l := openLog(t, path, st)
	evs := sampleEvents(20, rand.New(rand.NewPCG(1, 2)))
	for _, e := range evs[:10] {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	l.Close()
	l = openLog(t, path, st)
	for _, e := range evs[10:] {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatalf("Append after reopen: %v", err)
		}
	}
	s, err := l.Verify()
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if s.Records != 20 || s.Anchored != 20 {
		t.Fatalf("Verify = %+v; want 20 records, 20 anchored", s)
	}
	recs, err := l.Records()
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Errorf("record %d has seq %d", i, r.Seq)
		}
		got, want := fmt.Sprint(r.Event), fmt.Sprint(evs[i])
		if got != want {
			t.Errorf("record %d = %s; want %s", i, got, want)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v; want 0600", fi.Mode().Perm())
	}
}

func TestAppendRefusesBadEvents(t *testing.T) {
	l := openLog(t, filepath.Join(t.TempDir(), FileName), newMemStore())
	for _, e := range []Event{
		{},
		{Kind: maxKind + 1},
		{Kind: Exported, Subject: 3},
		{Kind: Membership, Changes: []Change{{Action: 9}}},
		{Kind: Membership, Changes: make([]Change, MaxChanges+1)},
	} {
		if err := l.Append(context.Background(), e); !errors.Is(err, ErrBadEvent) {
			t.Errorf("Append(%+v) = %v; want ErrBadEvent", e, err)
		}
	}
	good := Event{Kind: Rekey, Epoch: 3}
	if err := l.AppendAll(context.Background(), []Event{good, {Kind: 200}}); !errors.Is(err, ErrBadEvent) {
		t.Errorf("AppendAll with one bad event = %v; want ErrBadEvent", err)
	}
	if s, err := l.Verify(); err != nil || s.Records != 0 {
		t.Fatalf("Verify = %+v, %v; want 0 records, nil", s, err)
	}
}

// tamper is one way to alter the file: it returns the altered bytes and a description.
type tamper func(r *rand.Rand, data []byte, spans [][2]int, other []byte, otherSpans [][2]int) ([]byte, string)

// spans returns where each record lies in data (offsets from the file's start).
func spans(t *testing.T, data []byte) [][2]int {
	t.Helper()
	recs, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	var out [][2]int
	off := len(magic)
	for _, r := range recs {
		n := 4 + len(r.body) + macSize
		out = append(out, [2]int{off, off + n})
		off += n
	}
	return out
}

var tampers = map[string]tamper{
	"flip": func(r *rand.Rand, d []byte, _ [][2]int, _ []byte, _ [][2]int) ([]byte, string) {
		i := r.IntN(len(d))
		bit := byte(1) << r.IntN(8)
		d[i] ^= bit
		return d, fmt.Sprintf("flip bit %#x of byte %d", bit, i)
	},
	"delete": func(r *rand.Rand, d []byte, sp [][2]int, _ []byte, _ [][2]int) ([]byte, string) {
		i := r.IntN(len(sp))
		return append(d[:sp[i][0]:sp[i][0]], d[sp[i][1]:]...), fmt.Sprintf("delete record %d", i+1)
	},
	"reorder": func(r *rand.Rand, d []byte, sp [][2]int, _ []byte, _ [][2]int) ([]byte, string) {
		i := r.IntN(len(sp) - 1)
		j := i + 1 + r.IntN(len(sp)-i-1)
		out := append([]byte(nil), d[:sp[i][0]]...)
		out = append(out, d[sp[j][0]:sp[j][1]]...)
		out = append(out, d[sp[i][1]:sp[j][0]]...)
		out = append(out, d[sp[i][0]:sp[i][1]]...)
		out = append(out, d[sp[j][1]:]...)
		return out, fmt.Sprintf("swap records %d and %d", i+1, j+1)
	},
	"truncate": func(r *rand.Rand, d []byte, sp [][2]int, _ []byte, _ [][2]int) ([]byte, string) {
		if r.IntN(2) == 0 {
			// At a record boundary: what a careful attacker does, the tail included.
			k := r.IntN(len(sp))
			return d[:sp[k][0]], fmt.Sprintf("truncate to %d records", k)
		}
		n := r.IntN(len(d))
		return d[:n], fmt.Sprintf("truncate to %d bytes", n)
	},
	"splice": func(r *rand.Rand, d []byte, sp [][2]int, o []byte, osp [][2]int) ([]byte, string) {
		at := sp[r.IntN(len(sp))]
		switch r.IntN(4) {
		case 0: // a record of this trail copied in again elsewhere (a replay)
			src := sp[r.IntN(len(sp))]
			out := append([]byte(nil), d[:at[0]]...)
			out = append(out, d[src[0]:src[1]]...)
			return append(out, d[at[0]:]...), "duplicate a record"
		case 1: // a record of another device's trail put in place of one
			src := osp[r.IntN(len(osp))]
			out := append([]byte(nil), d[:at[0]]...)
			out = append(out, o[src[0]:src[1]]...)
			return append(out, d[at[1]:]...), "replace a record with another trail's"
		case 2: // another device's record appended at the end
			src := osp[r.IntN(len(osp))]
			return append(d, o[src[0]:src[1]]...), "append another trail's record"
		default: // random bytes inserted
			junk := make([]byte, 1+r.IntN(80))
			for i := range junk {
				junk[i] = byte(r.Uint32())
			}
			pos := r.IntN(len(d) + 1)
			out := append([]byte(nil), d[:pos]...)
			out = append(out, junk...)
			return append(out, d[pos:]...), fmt.Sprintf("insert %d random bytes at %d", len(junk), pos)
		}
	},
}

// TestTamperDetected makes 1,000 random alterations of a trail's file (flip, delete, reorder,
// truncate, splice) and requires every one to be detected, by Verify on the open Log and by a
// fresh Open (which then refuses appends).
func TestTamperDetected(t *testing.T) {
	seed := *tamperSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -audit.seed=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 0))

	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	st := newMemStore()
	l := openLog(t, path, st)
	for _, e := range sampleEvents(24, r) {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sp := spans(t, orig)

	otherPath := filepath.Join(dir, "other.log")
	ol := openLog(t, otherPath, newMemStore())
	for _, e := range sampleEvents(24, r) {
		if err := ol.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	other, err := os.ReadFile(otherPath)
	if err != nil {
		t.Fatal(err)
	}
	osp := spans(t, other)

	names := []string{"flip", "delete", "reorder", "truncate", "splice"}
	tried := map[string]int{}
	for i := range 1000 {
		name := names[i%len(names)]
		bad, what := tampers[name](r, bytes.Clone(orig), sp, other, osp)
		if bytes.Equal(bad, orig) {
			t.Fatalf("attempt %d (%s) changed nothing", i, what)
		}
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Verify(); err == nil {
			t.Fatalf("attempt %d: %s: Verify found nothing", i, what)
		} else if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("attempt %d: %s: Verify = %v; want ErrTampered or ErrMalformed", i, what, err)
		}
		fresh, err := Open(path, st, Config{})
		if err != nil {
			t.Fatalf("attempt %d: %s: Open: %v", i, what, err)
		}
		if _, err := fresh.Verify(); err == nil {
			t.Fatalf("attempt %d: %s: Verify after Open found nothing", i, what)
		}
		if err := fresh.Append(context.Background(), Event{Kind: Rekey}); err == nil {
			t.Fatalf("attempt %d: %s: Append to a tampered trail succeeded", i, what)
		}
		fresh.Close()
		tried[name]++
	}
	t.Logf("detected: %v", tried)
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Verify(); err != nil {
		t.Fatalf("control: the untouched file fails: %v", err)
	}
}

// TestTruncatedTailDetected is the attack that an unanchored chain misses: dropping the newest
// records at a record boundary leaves a valid chain.
func TestTruncatedTailDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	st := newMemStore()
	l := openLog(t, path, st)
	for _, e := range sampleEvents(5, rand.New(rand.NewPCG(3, 4))) {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(path)
	sp := spans(t, data)
	if err := os.WriteFile(path, data[:sp[4][0]], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(data[:sp[4][0]]); err != nil {
		t.Fatalf("the truncated file should still decode: %v", err)
	}
	_, err := l.Verify()
	if !errors.Is(err, ErrTampered) {
		t.Fatalf("Verify = %v; want ErrTampered", err)
	}
	t.Logf("reason: %v", err)
	// An older copy of the whole file is the same attack.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	fresh, err := Open(path, st, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := fresh.Verify(); !errors.Is(err, ErrTampered) {
		t.Fatalf("Verify of a deleted trail = %v; want ErrTampered", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open recreated a deleted trail, hiding its loss")
	}
}

// TestCrashBetweenWrites: a record fsynced but not anchored is kept; a torn record after the
// anchored head is cut off at Open; appends go on.
func TestCrashBetweenWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	st := newMemStore()
	l := openLog(t, path, st)
	evs := sampleEvents(6, rand.New(rand.NewPCG(5, 6)))
	for _, e := range evs[:3] {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	st.failPut = true
	if err := l.Append(context.Background(), evs[3]); err == nil {
		t.Fatal("Append with a failing store: want an error")
	}
	st.failPut = false
	s, err := l.Verify()
	if err != nil || s.Records != 4 || s.Anchored != 3 {
		t.Fatalf("Verify = %+v, %v; want 4 records, 3 anchored", s, err)
	}
	l.Close()
	// A torn fifth record: a prefix of what an append writes.
	body := marshalBody(5, evs[4])
	rec := appendRecord(nil, body, chainMAC(make([]byte, 32), [32]byte{}, body))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(rec[:len(rec)/2])
	f.Close()
	l = openLog(t, path, st)
	if err := l.Append(context.Background(), evs[5]); err != nil {
		t.Fatalf("Append after a torn record: %v", err)
	}
	s, err = l.Verify()
	if err != nil || s.Records != 5 || s.Anchored != 5 {
		t.Fatalf("Verify = %+v, %v; want 5 records, 5 anchored", s, err)
	}
}

// TestAuditBundleIsFHIR validates the export of every kind of event against the R4 schema.
func TestAuditBundleIsFHIR(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l := openLog(t, path, newMemStore())
	evs := sampleEvents(int(maxKind)*2, rand.New(rand.NewPCG(7, 8)))
	evs = append(evs, Event{Kind: Membership, Epoch: 4, Changes: []Change{{Action: Remove, Device: ShortID{9, 9, 9, 9}}}})
	for _, e := range evs {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := l.Records()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Bundle(recs, ShortID{1, 2, 3, 4}, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	fhirtest.Validate(t, b)
	for _, want := range []string{`"resourceType": "AuditEvent"`, `"code": "membership"`, `"valueString": "remove"`, `"value": "01020304"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("bundle lacks %s", want)
		}
	}
	// The control: the schema catches a broken AuditEvent.
	broken := bytes.Replace(b, []byte(`"recorded": "`), []byte(`"recorded": "yesterday `), 1)
	ft := &failT{TB: t}
	func() {
		defer func() { recover() }()
		fhirtest.Validate(ft, broken)
	}()
	if !ft.failed {
		t.Fatal("the schema accepted an AuditEvent whose recorded is not an instant")
	}
}

// failT records a Fatalf instead of failing the test (the control of a validation).
type failT struct {
	testing.TB
	failed bool
}

func (f *failT) Helper() {}
func (f *failT) Fatalf(string, ...any) {
	f.failed = true
	panic("stop")
}

// BenchmarkAppend measures recording events: one at a time (a write, an fsync and an anchor in the
// store each) and 64 at once (AppendAll), on a real store.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			dir := b.TempDir()
			st, err := storage.Create(filepath.Join(dir, "store"), storage.Options{Passphrase: []byte("pw"), KDF: storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			path := filepath.Join(dir, FileName)
			l, err := Open(path, st, Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			evs := sampleEvents(batch, rand.New(rand.NewPCG(11, 12)))
			b.ResetTimer()
			for b.Loop() {
				if err := l.AppendAll(context.Background(), evs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			fi, _ := os.Stat(path)
			n := float64(b.N * batch)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/event")
			b.ReportMetric(float64(fi.Size()-int64(len(magic)))/n, "bytes/event")
		})
	}
}

func FuzzDecode(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, FileName)
	l, err := Open(path, newMemStore(), Config{})
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range sampleEvents(10, rand.New(rand.NewPCG(9, 10))) {
		if err := l.Append(context.Background(), e); err != nil {
			f.Fatal(err)
		}
	}
	l.Close()
	data, _ := os.ReadFile(path)
	f.Add(data)
	f.Add([]byte(magic))
	f.Add(data[:len(data)-7])
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Decode(b)
		for _, r := range recs {
			if err := r.Event.Validate(); err != nil {
				t.Fatalf("Decode returned an invalid event: %v", err)
			}
			// What decodes re-encodes to the same body.
			if got := marshalBody(r.Seq, r.Event); !bytes.Equal(got, r.body) {
				t.Fatalf("record %d re-encodes differently", r.Seq)
			}
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
		}
	})
}

// TestRestart: an intact trail is not restarted; a broken one is kept aside as evidence and a new
// chain starts with a Restarted record that verifies, on this Log and after a reopen.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	st := newMemStore()
	l := openLog(t, path, st)
	for _, e := range sampleEvents(4, rand.New(rand.NewPCG(13, 14))) {
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Restart(context.Background()); !errors.Is(err, ErrIntact) {
		t.Fatalf("Restart of an intact trail = %v; want ErrIntact", err)
	}
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, data[:len(data)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	kept, err := l.Restart(context.Background())
	if err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got, _ := os.ReadFile(kept); !bytes.Equal(got, data[:len(data)-10]) {
		t.Fatalf("the broken trail was not kept at %s", kept)
	}
	if err := l.Append(context.Background(), Event{Kind: Rekey, Epoch: 9}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = openLog(t, path, st)
	recs, err := l.Records()
	if err != nil {
		t.Fatalf("after Restart and reopen: %v", err)
	}
	if len(recs) != 2 || recs[0].Event.Kind != Restarted || recs[0].Event.Count != 4 || recs[1].Event.Kind != Rekey {
		t.Fatalf("records after Restart: %+v", recs)
	}
}
