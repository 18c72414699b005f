package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// cheapKDF keeps Argon2id fast in tests; real stores use the defaults.
var cheapKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func testOptions(pass string) Options {
	return Options{Passphrase: []byte(pass), KDF: cheapKDF}
}

// newStore creates a store in a fresh temporary directory and closes it at
// the end of the test.
func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Create(dir, testOptions("correct horse"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func reopen(t *testing.T, s *Store, dir string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err := Open(dir, testOptions("correct horse"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func id32(n int) [32]byte {
	return sha256.Sum256(binary.BigEndian.AppendUint64([]byte("id"), uint64(n)))
}

func topic(n byte) [16]byte {
	var t [16]byte
	t[0], t[15] = n, n
	return t
}

func rec(top [16]byte, time uint64, n int) EnvelopeRecord {
	return EnvelopeRecord{
		Key:  EnvelopeKey{Topic: top, Time: time, ID: opID(n)},
		Data: fmt.Appendf(nil, "envelope %d at %d", n, time),
	}
}

func TestCreateOpenRoundtrip(t *testing.T) {
	s, dir := newStore(t)
	team := id32(100)
	invite := [16]byte{1, 2, 3}
	envs := []EnvelopeRecord{rec(topic(1), 5, 1), rec(topic(1), 3, 2), rec(topic(2), 4, 3)}

	if err := s.PutSecret("device", []byte("device secret")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTeam(team, []byte("team state")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPeer("12D3KooWpeer", []byte("peer blob")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutInvite(invite, []byte("invite")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEnvelopes(envs); err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s, dir)

	if got, err := s.Secret("device"); err != nil || string(got) != "device secret" {
		t.Errorf("Secret = %q, %v; want %q, nil", got, err, "device secret")
	}
	if got, err := s.Team(team); err != nil || string(got) != "team state" {
		t.Errorf("Team = %q, %v; want %q, nil", got, err, "team state")
	}
	teams, err := s.Teams()
	if err != nil || len(teams) != 1 || string(teams[team]) != "team state" {
		t.Errorf("Teams = %q, %v; want one team", teams, err)
	}
	peers, err := s.Peers()
	if err != nil || len(peers) != 1 || string(peers["12D3KooWpeer"]) != "peer blob" {
		t.Errorf("Peers = %q, %v; want one peer", peers, err)
	}
	if err := s.DeletePeer("12D3KooWpeer"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePeer("12D3KooWpeer"); err != nil {
		t.Errorf("DeletePeer of a missing key: %v; want nil", err)
	}
	if peers, err := s.Peers(); err != nil || len(peers) != 0 {
		t.Errorf("Peers after DeletePeer = %v, %v; want none", peers, err)
	}
	if got, err := s.UseInvite(invite); err != nil || string(got) != "invite" {
		t.Errorf("UseInvite = %q, %v; want %q, nil", got, err, "invite")
	}
	for _, e := range envs {
		got, err := s.Envelope(e.Key.ID)
		if err != nil || got.Key != e.Key || !bytes.Equal(got.Data, e.Data) {
			t.Errorf("Envelope(%x) = %v, %q, %v; want %v, %q", e.Key.ID[:4], got.Key, got.Data, err, e.Key, e.Data)
		}
	}
}

func TestNotFound(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Secret("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Secret: got %v; want ErrNotFound", err)
	}
	if _, err := s.Team(id32(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Team: got %v; want ErrNotFound", err)
	}
	if _, err := s.Envelope(opID(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Envelope: got %v; want ErrNotFound", err)
	}
	if ok, err := s.HasEnvelope(opID(1)); ok || err != nil {
		t.Errorf("HasEnvelope = %v, %v; want false, nil", ok, err)
	}
	if _, err := s.UseInvite([16]byte{9}); !errors.Is(err, ErrNotFound) {
		t.Errorf("UseInvite: got %v; want ErrNotFound", err)
	}
	if keys, err := s.EnvelopeKeys(topic(7)); len(keys) != 0 || err != nil {
		t.Errorf("EnvelopeKeys = %v, %v; want none", keys, err)
	}
	for _, name := range []string{"", string(make([]byte, maxNameLen+1))} {
		if err := s.PutSecret(name, nil); !errors.Is(err, ErrBadKey) {
			t.Errorf("PutSecret(len %d): got %v; want ErrBadKey", len(name), err)
		}
		if err := s.PutPeer(name, nil); !errors.Is(err, ErrBadKey) {
			t.Errorf("PutPeer(len %d): got %v; want ErrBadKey", len(name), err)
		}
	}
}

// snapshot returns every file under dir with its mode and contents.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var b []byte
		if !d.IsDir() {
			if b, err = os.ReadFile(path); err != nil {
				return err
			}
		}
		m[path] = fmt.Sprintf("%v %v %x", info.Mode(), info.ModTime(), sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestWrongPassphrase(t *testing.T) {
	s, dir := newStore(t)
	if err := s.PutSecret("device", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	for _, pass := range []string{"wrong", "correct horse ", "Correct horse"} {
		s, err := Open(dir, testOptions(pass))
		if !errors.Is(err, ErrWrongPassphrase) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("Open(%q): got %v; want ErrWrongPassphrase", pass, err)
		}
	}
	if after := snapshot(t, dir); !maps.Equal(before, after) {
		t.Errorf("a refused Open changed the directory:\nbefore %v\nafter  %v", before, after)
	}
	// The KDF in Options is ignored by Open: the keyring's parameters rule.
	opts := testOptions("correct horse")
	opts.KDF = KDFParams{}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open with the right passphrase after refusals: %v", err)
	}
	defer s.Close()
	if got, err := s.Secret("device"); err != nil || string(got) != "kept" {
		t.Errorf("Secret = %q, %v; want %q, nil", got, err, "kept")
	}
}

func TestOpenNotInitialized(t *testing.T) {
	tmp := t.TempDir()
	for _, dir := range []string{tmp, filepath.Join(tmp, "missing")} {
		if s, err := Open(dir, testOptions("x")); !errors.Is(err, ErrNotInitialized) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Open(%s): got %v; want ErrNotInitialized", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(tmp, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open created the directory: stat error %v", err)
	}
}

// TestOpenLocked: a store that is open refuses a second Open with ErrLocked
// (what the CLI turns into "a node is already running"), and the first store
// still works.
func TestOpenLocked(t *testing.T) {
	s, dir := newStore(t)
	s2, err := Open(dir, testOptions("correct horse"))
	if !errors.Is(err, ErrLocked) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second Open: got %v; want ErrLocked", err)
	}
	if err := s.PutSecret("device", []byte("kept")); err != nil {
		t.Fatalf("PutSecret on the first store after the refusal: %v", err)
	}
	s = reopen(t, s, dir)
	if got, err := s.Secret("device"); err != nil || string(got) != "kept" {
		t.Errorf("Secret = %q, %v; want %q, nil", got, err, "kept")
	}
}

func TestCreateExists(t *testing.T) {
	s, dir := newStore(t)
	// Both while the first store is open and after it is closed.
	for range 2 {
		if s2, err := Create(dir, testOptions("other")); !errors.Is(err, ErrExists) {
			if s2 != nil {
				s2.Close()
			}
			t.Fatalf("Create on a store: got %v; want ErrExists", err)
		}
		s.Close()
	}
	reopen(t, s, dir) // still opens with the original passphrase
}

func TestBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, opts := range []Options{
		{},
		{Passphrase: []byte("x"), KDF: KDFParams{Time: maxKDFTime + 1}},
		{Passphrase: []byte("x"), KDF: KDFParams{MemoryKiB: 4, Threads: 1}},
		{Passphrase: []byte("x"), KDF: KDFParams{MemoryKiB: maxKDFMemory + 1}},
	} {
		if s, err := Create(dir, opts); !errors.Is(err, ErrBadOptions) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Create(%+v): got %v; want ErrBadOptions", opts.KDF, err)
		}
	}
	if s, err := Open(dir, Options{}); !errors.Is(err, ErrBadOptions) {
		if s != nil {
			s.Close()
		}
		t.Errorf("Open without passphrase: got %v; want ErrBadOptions", err)
	}
}

func TestFileModes(t *testing.T) {
	_, dir := newStore(t)
	for path, want := range map[string]fs.FileMode{
		dir:                             fs.ModeDir | 0o700,
		filepath.Join(dir, dbDirName):   fs.ModeDir | 0o700,
		filepath.Join(dir, keyringName): 0o600,
	} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode(); got != want {
			t.Errorf("mode of %s: got %v; want %v", path, got, want)
		}
	}
}

func TestEnvelopeOrderAndDedup(t *testing.T) {
	a, b := topic(1), topic(2)
	tests := []struct {
		name      string
		batches   [][]EnvelopeRecord
		wantAdded [][]int // record numbers added, per batch
		wantA     []int   // topic a, in (time, id) order
	}{
		{
			name:      "empty",
			batches:   [][]EnvelopeRecord{nil},
			wantAdded: [][]int{nil},
		},
		{
			name:      "time order regardless of insertion order",
			batches:   [][]EnvelopeRecord{{rec(a, 30, 1), rec(a, 10, 2), rec(a, 20, 3)}},
			wantAdded: [][]int{{1, 2, 3}},
			wantA:     []int{2, 3, 1},
		},
		{
			name:      "same time ordered by id",
			batches:   [][]EnvelopeRecord{{rec(a, 7, 1), rec(a, 7, 2), rec(a, 7, 3), rec(a, 7, 4)}},
			wantAdded: [][]int{{1, 2, 3, 4}},
			wantA:     sortedByID(1, 2, 3, 4),
		},
		{
			name:      "time beats id; big times compare as unsigned big-endian",
			batches:   [][]EnvelopeRecord{{rec(a, 1<<63, 1), rec(a, 256, 2), rec(a, 255, 3)}},
			wantAdded: [][]int{{1, 2, 3}},
			wantA:     []int{3, 2, 1},
		},
		{
			name:      "duplicate inside a batch",
			batches:   [][]EnvelopeRecord{{rec(a, 1, 1), rec(a, 1, 1), rec(a, 2, 2)}},
			wantAdded: [][]int{{1, 2}},
			wantA:     []int{1, 2},
		},
		{
			name:      "duplicate across batches",
			batches:   [][]EnvelopeRecord{{rec(a, 1, 1)}, {rec(a, 1, 1), rec(a, 2, 2)}},
			wantAdded: [][]int{{1}, {2}},
			wantA:     []int{1, 2},
		},
		{
			name:      "same id in another topic or at another time is a duplicate",
			batches:   [][]EnvelopeRecord{{rec(a, 1, 1)}, {rec(b, 1, 1), rec(a, 9, 1), rec(b, 2, 2)}},
			wantAdded: [][]int{{1}, {2}},
			wantA:     []int{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			for i, batch := range tt.batches {
				added, err := s.PutEnvelopes(batch)
				if err != nil {
					t.Fatalf("PutEnvelopes: %v", err)
				}
				if got, want := numbers(added), tt.wantAdded[i]; !slices.Equal(got, want) {
					t.Errorf("batch %d added: got %v; want %v", i, got, want)
				}
			}
			keys, err := s.EnvelopeKeys(a)
			if err != nil {
				t.Fatal(err)
			}
			if got := numbers(keys); !slices.Equal(got, tt.wantA) {
				t.Errorf("EnvelopeKeys: got %v; want %v", got, tt.wantA)
			}
			var viaFn []EnvelopeKey
			err = s.Envelopes(a, func(r EnvelopeRecord) error {
				if want := fmt.Appendf(nil, "envelope %d at %d", number(r.Key.ID), r.Key.Time); !bytes.Equal(r.Data, want) {
					t.Errorf("Envelopes data: got %q; want %q", r.Data, want)
				}
				viaFn = append(viaFn, r.Key)
				return nil
			})
			if err != nil || !slices.Equal(viaFn, keys) {
				t.Errorf("Envelopes: got %v, %v; want %v, nil", numbers(viaFn), err, tt.wantA)
			}
			for _, n := range tt.wantA {
				if ok, err := s.HasEnvelope(opID(n)); !ok || err != nil {
					t.Errorf("HasEnvelope(%d) = %v, %v; want true, nil", n, ok, err)
				}
				if r, err := s.Envelope(opID(n)); err != nil || r.Key.Topic != a {
					t.Errorf("Envelope(%d) = %v, %v; want topic a", n, r.Key, err)
				}
			}
		})
	}
}

// number inverts opID for the small numbers tests use.
func number(id [IDSize]byte) int {
	for n := range 10000 {
		if opID(n) == id {
			return n
		}
	}
	return -1
}

func numbers(keys []EnvelopeKey) []int {
	var ns []int
	for _, k := range keys {
		ns = append(ns, number(k.ID))
	}
	return ns
}

func sortedByID(ns ...int) []int {
	slices.SortFunc(ns, func(x, y int) int {
		a, b := opID(x), opID(y)
		return bytes.Compare(a[:], b[:])
	})
	return ns
}

func TestEnvelopesStopsEarly(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.PutEnvelopes([]EnvelopeRecord{rec(topic(1), 1, 1), rec(topic(1), 2, 2), rec(topic(1), 3, 3)}); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	calls := 0
	err := s.Envelopes(topic(1), func(EnvelopeRecord) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 2 {
		t.Errorf("Envelopes: got %v after %d calls; want the callback's error after 2", err, calls)
	}
}

// TestPutEnvelopesSplitsBigBatch stores a batch far larger than one Badger
// transaction; without the split it fails with ErrTxnTooBig.
func TestPutEnvelopesSplitsBigBatch(t *testing.T) {
	s, dir := newStore(t)
	const n = 60 // 60 x 60 KiB inline = 3.5 MiB, about three transactions
	var recs []EnvelopeRecord
	for i := range n {
		r := rec(topic(1), uint64(i), i)
		r.Data = bytes.Repeat([]byte{byte(i)}, 60<<10)
		recs = append(recs, r)
	}
	recs = append(recs, recs[0]) // a duplicate at the end, after the splits
	added, err := s.PutEnvelopes(recs)
	if err != nil {
		t.Fatalf("PutEnvelopes: %v", err)
	}
	if len(added) != n {
		t.Fatalf("added %d; want %d", len(added), n)
	}
	s = reopen(t, s, dir)
	keys, err := s.EnvelopeKeys(topic(1))
	if err != nil || len(keys) != n {
		t.Fatalf("EnvelopeKeys: %d keys, %v; want %d", len(keys), err, n)
	}
	for i, r := range recs[:n] {
		got, err := s.Envelope(r.Key.ID)
		if err != nil || !bytes.Equal(got.Data, r.Data) {
			t.Fatalf("Envelope %d: %v (data equal %v)", i, err, bytes.Equal(got.Data, r.Data))
		}
	}
}

func TestLargeValues(t *testing.T) {
	// Values above the value threshold go to Badger's value log.
	s, dir := newStore(t)
	big := bytes.Repeat([]byte("large team state "), 40000) // 680 KB
	if err := s.PutTeam(id32(1), big); err != nil {
		t.Fatal(err)
	}
	r := rec(topic(1), 1, 1)
	r.Data = bytes.Repeat([]byte{7}, 80<<10)
	if _, err := s.PutEnvelopes([]EnvelopeRecord{r}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	if got, err := s.Team(id32(1)); err != nil || !bytes.Equal(got, big) {
		t.Errorf("Team: %v, equal %v", err, bytes.Equal(got, big))
	}
	if got, err := s.Envelope(r.Key.ID); err != nil || !bytes.Equal(got.Data, r.Data) {
		t.Errorf("Envelope: %v, equal %v", err, bytes.Equal(got.Data, r.Data))
	}
}

func TestConcurrentPutEnvelopes(t *testing.T) {
	s, _ := newStore(t)
	const writers, per = 4, 50
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for w := range writers {
		wg.Go(func() {
			// Every writer stores the same ids in a different order.
			order := rand.New(rand.NewPCG(uint64(w), 1)).Perm(per)
			for _, n := range order {
				added, err := s.PutEnvelopes([]EnvelopeRecord{rec(topic(byte(n%3)), uint64(n), n)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += len(added)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if total != per {
		t.Errorf("added %d in total; want %d (each id exactly once)", total, per)
	}
}

func TestUseInviteOnce(t *testing.T) {
	s, dir := newStore(t)
	id := [16]byte{42}
	if err := s.PutInvite(id, []byte("code")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.UseInvite(id); err != nil || string(got) != "code" {
		t.Fatalf("first UseInvite = %q, %v; want %q, nil", got, err, "code")
	}
	if _, err := s.UseInvite(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second UseInvite: got %v; want ErrNotFound", err)
	}
	s = reopen(t, s, dir) // the deletion is durable
	if _, err := s.UseInvite(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UseInvite after reopen: got %v; want ErrNotFound", err)
	}

	// Concurrent callers: exactly one wins.
	id2 := [16]byte{43}
	if err := s.PutInvite(id2, []byte("code2")); err != nil {
		t.Fatal(err)
	}
	const callers = 8
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		wins, notFound int
	)
	for range callers {
		wg.Go(func() {
			_, err := s.UseInvite(id2)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrNotFound):
				notFound++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || notFound != callers-1 {
		t.Errorf("concurrent UseInvite: %d wins, %d not found; want 1, %d", wins, notFound, callers-1)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWipe(t *testing.T) {
	s, dir := newStore(t)
	if _, err := s.PutEnvelopes([]EnvelopeRecord{rec(topic(1), 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSecret("device", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An attacker's copy of the database files, taken before the wipe.
	s = reopen(t, s, dir) // flush to disk files
	stolen := filepath.Join(t.TempDir(), "stolen-db")
	copyTree(t, filepath.Join(dir, dbDirName), stolen)

	if err := s.Wipe(); err != nil {
		t.Fatalf("Wipe: %v", err)
	}
	for _, name := range []string{keyringName, dbDirName} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Wipe: stat error %v; want not exist", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); err != nil {
		t.Errorf("Wipe removed a file it does not own: %v", err)
	}
	if _, err := s.Secret("device"); !errors.Is(err, ErrClosed) {
		t.Errorf("Secret after Wipe: got %v; want ErrClosed", err)
	}
	if err := s.Wipe(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Wipe: got %v; want ErrClosed", err)
	}
	if s2, err := Open(dir, testOptions("correct horse")); !errors.Is(err, ErrNotInitialized) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open after Wipe: got %v; want ErrNotInitialized", err)
	}
	// Even with the passphrase and the stolen files back in place, nothing opens.
	copyTree(t, stolen, filepath.Join(dir, dbDirName))
	if s2, err := Open(dir, testOptions("correct horse")); !errors.Is(err, ErrNotInitialized) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open of restored files after Wipe: got %v; want ErrNotInitialized", err)
	}
	// Create over the leftovers makes a fresh, empty store.
	s2, err := Create(dir, testOptions("new"))
	if err != nil {
		t.Fatalf("Create after Wipe: %v", err)
	}
	defer s2.Close()
	if ok, err := s2.HasEnvelope(opID(1)); ok || err != nil {
		t.Errorf("HasEnvelope in the new store = %v, %v; want false, nil", ok, err)
	}
}

func TestWipeDir(t *testing.T) {
	s, dir := newStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Wipe(dir); err != nil {
		t.Fatalf("Wipe(dir): %v", err)
	}
	if s2, err := Open(dir, testOptions("correct horse")); !errors.Is(err, ErrNotInitialized) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open after Wipe(dir): got %v; want ErrNotInitialized", err)
	}
	if _, err := os.Stat(filepath.Join(dir, dbDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("db after Wipe(dir): stat error %v; want not exist", err)
	}
	if err := Wipe(filepath.Join(dir, "nothing-here")); err != nil {
		t.Errorf("Wipe of a missing dir: %v; want nil", err)
	}
}

func TestClosed(t *testing.T) {
	s, _ := newStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v; want nil", err)
	}
	var id [32]byte
	calls := map[string]error{
		"PutSecret":    s.PutSecret("a", nil),
		"PutTeam":      s.PutTeam(id, nil),
		"PutPeer":      s.PutPeer("p", nil),
		"PutInvite":    s.PutInvite([16]byte{}, nil),
		"Envelopes":    s.Envelopes([16]byte{}, func(EnvelopeRecord) error { return nil }),
		"Wipe":         s.Wipe(),
		"Secret":       second(s.Secret("a")),
		"Team":         second(s.Team(id)),
		"Teams":        second(s.Teams()),
		"Peers":        second(s.Peers()),
		"UseInvite":    second(s.UseInvite([16]byte{})),
		"PutEnvelopes": second(s.PutEnvelopes(nil)),
		"HasEnvelope":  second(s.HasEnvelope([IDSize]byte(id[:]))),
		"Envelope":     second(s.Envelope([IDSize]byte(id[:]))),
		"EnvelopeKeys": second(s.EnvelopeKeys([16]byte{})),
	}
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: got %v; want ErrClosed", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// TestCloseWhileBusy closes the store while readers and writers run: every
// call either succeeds or returns ErrClosed, and nothing panics.
func TestCloseWhileBusy(t *testing.T) {
	s, _ := newStore(t)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			<-start
			for i := 0; ; i++ {
				_, err := s.PutEnvelopes([]EnvelopeRecord{rec(topic(1), uint64(i), w*100000+i)})
				if err == nil {
					_, err = s.EnvelopeKeys(topic(1))
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	close(start)
	if _, err := s.PutEnvelopes([]EnvelopeRecord{rec(topic(2), 1, 999999)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

func TestCreateWithoutRandomness(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	opts := testOptions("p")
	opts.Rand = failingReader{}
	if s, err := Create(dir, opts); err == nil {
		s.Close()
		t.Fatal("Create with a failing Rand succeeded")
	}
	if s, err := Open(dir, testOptions("p")); !errors.Is(err, ErrNotInitialized) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open after a failed Create: got %v; want ErrNotInitialized", err)
	}
	s, err := Create(dir, testOptions("p"))
	if err != nil {
		t.Fatalf("Create after a failed Create: %v", err)
	}
	s.Close()
}

// opID is a test envelope or op id: the first IDSize bytes of id32(n).
func opID(n int) [IDSize]byte {
	h := id32(n)
	return [IDSize]byte(h[:])
}
