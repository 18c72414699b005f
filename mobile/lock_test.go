package mobile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/storage"
)

// phoneIP makes a Node on a fresh directory that listens on loopback only (no radio, no mDNS): the
// locked device (node/locked) listens on the same ports, so a member reaches it while it is locked.
func phoneIP(t *testing.T) (*Node, *events) {
	t.Helper()
	m := NewNode(t.TempDir())
	m.kdf = storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	m.SetListen("/ip4/127.0.0.1/tcp/0", true)
	ev := newEvents()
	m.SetEvents(ev)
	t.Cleanup(func() { m.Stop() })
	return m, ev
}

// contentCalls are every facade method that reads or changes a team's content.
func contentCalls(m *Node, team string) map[string]func() error {
	return map[string]func() error{
		"Teams":      func() error { _, err := m.Teams(); return err },
		"CreateTeam": func() error { _, err := m.CreateTeam("Ward 9", "clinical"); return err },
		"Invite":     func() error { _, err := m.Invite(team, 60); return err },
		"Join":       func() error { _, err := m.Join("not-a-code"); return err },
		"Send":       func() error { _, err := m.Send(team, "hello", "", "", ""); return err },
		"Messages":   func() error { _, err := m.Messages(team, 0); return err },
		"Members":    func() error { _, err := m.Members(team); return err },
	}
}

// TestLockSealsAndUnlockOpens is the thief with a locked phone: every content call is refused with
// the locked error, the store is closed (the passphrase is needed again), and what a member sends
// meanwhile is kept sealed on disk (no plaintext), then shown after Unlock even though the sender is
// gone by then (so it came from the sealed inbox, not a later catch-up). A wrong passphrase fails.
func TestLockSealsAndUnlockOpens(t *testing.T) {
	a, _ := phoneIP(t)
	b, _ := phoneIP(t)
	if err := a.Create("Dr Banda", "pass a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Create("Nurse Phiri", "pass b"); err != nil {
		t.Fatal(err)
	}
	team, err := a.CreateTeam("Maternity Ward 3", "clinical")
	if err != nil {
		t.Fatal(err)
	}
	code, err := a.Invite(team.ID, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Join(code); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(); err != nil {
		t.Fatal(err)
	}
	if !b.IsLocked() {
		t.Fatal("IsLocked is false after Lock")
	}
	if err := b.Lock(); err != nil {
		t.Errorf("Lock of a locked phone: %v; want nothing to happen", err)
	}
	for name, call := range contentCalls(b, team.ID) {
		if err := call(); !errors.Is(err, ErrLocked) {
			t.Errorf("%s while locked: %v; want ErrLocked", name, err)
		}
	}
	if strings.Contains(ErrLocked.Error(), "session") || strings.Contains(ErrLocked.Error(), "fieldmesh unlock") {
		t.Errorf("the locked error %q names a package or a desktop command", ErrLocked)
	}

	// A sends once B's locked device is in the team's topic with A.
	na, _, err := a.ses.Current()
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "B's locked device in the team's topic with A", func() bool {
		ld := b.ses.Carrier()
		return ld != nil && ld.InTopics(na.Host().ID())
	})
	const text, patient = "Bed 7: sats 88%, on oxygen", "MRN-990011"
	if _, err := a.Send(team.ID, text, "urgent", patient, ""); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(b.dir, "sealed-inbox")
	poll(t, "the sealed inbox on B", func() bool {
		fi, err := os.Stat(spool)
		return err == nil && fi.Size() > 0
	})
	raw, err := os.ReadFile(spool)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), text) || strings.Contains(string(raw), patient) {
		t.Fatal("the sealed inbox holds plaintext")
	}
	if err := a.Stop(); err != nil { // A is gone: only the sealed inbox can show B the message
		t.Fatal(err)
	}

	if err := b.Unlock("pass a"); err == nil || err.Error() != "wrong passphrase" {
		t.Fatalf("Unlock with a wrong passphrase: %v; want \"wrong passphrase\"", err)
	}
	if !b.IsLocked() {
		t.Fatal("a wrong passphrase unlocked the phone")
	}
	if err := b.Unlock("pass b"); err != nil {
		t.Fatal(err)
	}
	ms, err := b.Messages(team.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := 0; i < ms.Len(); i++ {
		found = found || (ms.Get(i).Text == text && ms.Get(i).Patient == patient)
	}
	if !found {
		t.Fatalf("B shows %d messages after Unlock, not the one sent while it was locked", ms.Len())
	}
	if _, err := os.Stat(spool); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sealed inbox is still there after Unlock: %v", err)
	}
	if _, err := b.Send(team.ID, "seen", "", "", ""); err != nil {
		t.Errorf("Send after Unlock: %v", err)
	}
}

// TestUnlockBackoffAndWipe is the thief guessing passphrases: after two wrong ones the next try is
// refused at once with a clear wait, whatever it is; then Wipe leaves the directory without a store,
// and the phone refuses everything.
func TestUnlockBackoffAndWipe(t *testing.T) {
	m, _ := phoneIP(t)
	if err := m.Create("Dr Banda", "pass a"); err != nil {
		t.Fatal(err)
	}
	team, err := m.CreateTeam("Maternity Ward 3", "clinical")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := m.Unlock("guess"); err == nil || err.Error() != "wrong passphrase" {
			t.Fatalf("guess %d: %v; want \"wrong passphrase\"", i+1, err)
		}
	}
	err = m.Unlock("pass a")
	if err == nil || !strings.HasPrefix(err.Error(), "too many wrong passphrases: try again in ") {
		t.Fatalf("a third try at once: %v; want the wait", err)
	}
	if !m.IsLocked() {
		t.Fatal("the phone unlocked during the wait")
	}

	if err := m.Wipe(); err != nil {
		t.Fatal(err)
	}
	if m.Exists() {
		t.Error("a store exists after Wipe")
	}
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("the directory holds %v after Wipe; want nothing", names)
	}
	for name, call := range contentCalls(m, team.ID) {
		if err := call(); !errors.Is(err, ErrWiped) {
			t.Errorf("%s after Wipe: %v; want ErrWiped", name, err)
		}
	}
	if err := m.Unlock("pass a"); !errors.Is(err, ErrWiped) {
		t.Errorf("Unlock after Wipe: %v; want ErrWiped", err)
	}
}

// TestWipeUnlocked wipes a running, unlocked phone, and one that is not started (a forgotten
// passphrase): both leave the directory without a store.
func TestWipeUnlocked(t *testing.T) {
	for _, started := range []bool{true, false} {
		m, _ := phoneIP(t)
		if err := m.Create("Dr Banda", "pass a"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.CreateTeam("Maternity Ward 3", "clinical"); err != nil {
			t.Fatal(err)
		}
		if !started {
			if err := m.Stop(); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Wipe(); err != nil {
			t.Fatalf("started %v: %v", started, err)
		}
		entries, _ := os.ReadDir(m.dir)
		if m.Exists() || len(entries) != 0 {
			t.Errorf("started %v: %d entries left after Wipe, store exists %v", started, len(entries), m.Exists())
		}
		if err := m.Start("pass a"); err == nil {
			t.Errorf("started %v: Start after Wipe opened a store", started)
		}
	}
}

// poll checks cond every 10 ms until it holds or 30 s passed.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30 s", what)
		}
		<-tick.C
	}
}
