package session_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/node/session"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		// libp2p's QUIC and resource manager keep process-wide workers.
		goleak.IgnoreAnyFunction("github.com/quic-go/quic-go.(*packetHandlerMap).runCloseQueue"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/host/resource-manager.(*resourceManager).background"),
	)
}

var testKDF = storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

const pass = "correct horse"

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logLines records log messages.
type logLines struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{}, 256)} }

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line+" ", p)
		}
		if ok {
			return true
		}
	}
	return false
}

func (l *logLines) wait(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, line := range l.lines {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-deadline.C:
			t.Fatalf("no log line with %q within the deadline", parts)
		}
	}
}

// newStore makes a store with a device identity in a fresh directory.
func newStore(t *testing.T, name string) (string, *storage.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := storage.Create(dir, storage.Options{Passphrase: []byte(pass), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Init(st, name); err != nil {
		t.Fatal(err)
	}
	return dir, st
}

func start(t *testing.T, dir string, st *storage.Store, adjust func(*session.Config)) *session.Session {
	t.Helper()
	cfg := session.Config{Dir: dir, Node: node.Config{NoMDNS: true, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		SyncInterval: time.Hour, RedialInterval: time.Hour}, IdleLock: -1, UnreachedLock: -1}
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := session.Start(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func current(t *testing.T, s *session.Session) *node.Node {
	t.Helper()
	n, _, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// After Lock, every route of the local API that shows content answers 423, and a request in progress
// (a follow stream) ends; Unlock brings it all back.
func TestLockedAPIShowsNothing(t *testing.T) {
	dir, st := newStore(t, "Dr Banda")
	s := start(t, dir, st, nil)
	n := current(t, s)
	team, err := n.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	if _, _, err := n.Send(ref, crdt.Message{Text: "Bed 4: BP 160/110", Patient: "MRN-448812"}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&localapi.Gate{Locker: s}).Handler())
	t.Cleanup(srv.Close)
	follow, err := http.Get(srv.URL + "/v1/messages?team=" + ref + "&follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Body.Close()
	if follow.StatusCode != http.StatusOK {
		t.Fatalf("follow before the lock: %s", follow.Status)
	}
	followDone := make(chan string, 1)
	go func() {
		b, _ := readAll(follow.Body)
		followDone <- b
	}()

	if err := s.Lock(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-followDone:
	case <-time.After(30 * time.Second):
		t.Fatal("a follow stream outlived the lock")
	}
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/status", ""}, {"GET", "/v1/teams", ""}, {"GET", "/v1/messages?team=" + ref, ""},
		{"GET", "/v1/members?team=" + ref, ""}, {"GET", "/v1/peers", ""}, {"GET", "/v1/relays", ""},
		{"POST", "/v1/send", `{"team":"` + ref + `","text":"x"}`}, {"POST", "/v1/invite", `{"team":"` + ref + `"}`},
		{"GET", "/v1/usage", ""}, {"POST", "/v1/verify", `{"team":"` + ref + `","member":"Dr Banda"}`},
	}
	for _, r := range routes {
		req, _ := http.NewRequest(r.method, srv.URL+r.path, strings.NewReader(r.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := readAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusLocked {
			t.Errorf("%s %s while locked: %s; want 423", r.method, r.path, resp.Status)
		}
		for _, secret := range []string{"160/110", "MRN-448812", "Maternity", "Banda"} {
			if strings.Contains(body, secret) {
				t.Errorf("%s %s while locked shows %q", r.method, r.path, secret)
			}
		}
	}
	if _, _, err := s.Current(); !errors.Is(err, session.ErrLocked) {
		t.Fatalf("Current while locked: %v; want ErrLocked", err)
	}
	if err := s.Unlock([]byte(pass)); err != nil {
		t.Fatal(err)
	}
	ms, err := current(t, s).Messages(ref)
	if err != nil || len(ms) != 1 || ms[0].Text != "Bed 4: BP 160/110" {
		t.Fatalf("after unlock: %d messages, %v; want the one sent", len(ms), err)
	}
}

func readAll(r interface{ Read([]byte) (int, error) }) (string, error) {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String(), nil
		}
	}
}

// After a first wrong passphrase the next try comes at once; then wrong ones wait 1 s, 2 s, 4 s before
// the next try; a try during the wait is refused without trying the passphrase; the count survives a
// restart; the right passphrase resets it.
func TestUnlockBackoff(t *testing.T) {
	dir, st := newStore(t, "Dr Banda")
	clk := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	s := start(t, dir, st, func(c *session.Config) { c.Now = clk.Now })
	if err := s.Lock(); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock([]byte("typo")); !errors.Is(err, storage.ErrWrongPassphrase) {
		t.Fatalf("first wrong try: %v", err)
	}
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if err := s.Unlock([]byte("guess")); !errors.Is(err, storage.ErrWrongPassphrase) {
			t.Fatalf("wrong try %d: %v; want ErrWrongPassphrase", i+1, err)
		}
		var we *session.WaitError
		if err := s.Unlock([]byte(pass)); !errors.As(err, &we) || we.Wait != wait {
			t.Fatalf("try right after wrong try %d: %v; want a wait of %v", i+1, err, wait)
		}
		if st := s.State(); !st.Locked || st.Failures != i+2 {
			t.Fatalf("state after wrong try %d: %+v", i+1, st)
		}
		clk.Add(wait)
	}
	// A restart (Open, as the daemon's start does) does not reset the count.
	if _, err := session.Open(dir, []byte("guess"), nil, clk.Now); !errors.Is(err, storage.ErrWrongPassphrase) {
		t.Fatalf("fifth wrong try: %v", err)
	}
	var we *session.WaitError
	if _, err := session.Open(dir, []byte(pass), nil, clk.Now); !errors.As(err, &we) || we.Wait != 8*time.Second {
		t.Fatalf("Open during the wait: %v; want a wait of 8s", err)
	}
	clk.Add(8 * time.Second)
	if err := s.Unlock([]byte(pass)); err != nil {
		t.Fatal(err)
	}
	if st := s.State(); st.Locked || st.Failures != 0 {
		t.Fatalf("state after the right passphrase: %+v; want unlocked, no failures", st)
	}
}

// The idle rule locks after IdleLock without a request; Touch starts the time again.
func TestIdleLock(t *testing.T) {
	dir, st := newStore(t, "Dr Banda")
	clk := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	s := start(t, dir, st, func(c *session.Config) {
		c.Now, c.IdleLock, c.CheckEvery = clk.Now, 5*time.Minute, time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	clk.Add(4 * time.Minute)
	s.Touch()
	clk.Add(4 * time.Minute)
	_, gone, err := s.Current()
	if err != nil {
		t.Fatalf("locked 4 minutes after a request: %v", err)
	}
	clk.Add(time.Minute)
	select {
	case <-gone:
	case <-time.After(30 * time.Second):
		t.Fatal("not locked 5 minutes after the last request")
	}
	if !s.Locked() {
		t.Fatal("the node went but the session is not locked")
	}
}

// Messages sent while B is locked arrive by gossip, are kept sealed (the spool file holds neither the
// text nor the patient reference), and are judged and shown at unlock.
func TestMessagesWhileLockedOpenAtUnlock(t *testing.T) {
	dirA, stA := newStore(t, "Dr Banda")
	defer stA.Close()
	a := start(t, dirA, stA, nil)
	na := current(t, a)
	dirB, stB := newStore(t, "Nurse Phiri")
	logs := newLogLines()
	b := start(t, dirB, stB, func(c *session.Config) {
		c.Logger = slog.New(logs)
		c.Node.Bootstrap = []string{na.Host().Addrs()[0].String() + "/p2p/" + na.Host().ID().String()}
	})
	team, err := na.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	inv, err := na.Invite(ref, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := current(t, b).Join(context.Background(), inv.Code()); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, na, ref, 2)
	if err := b.Lock(); err != nil {
		t.Fatal(err)
	}
	// A sees B again (the locked host, same peer id) in the team's topic before sending, and B sees A.
	waitTopicPeer(t, na, b)
	poll(t, "B in A's view of the team's topic", func() bool {
		ps, err := na.TopicPeers(ref)
		return err == nil && slices.Contains(ps, b.PeerAddrs()[0].ID)
	})
	const text, patient = "Bed 7: sats 88%, on oxygen", "MRN-990011"
	if _, _, err := na.Send(ref, crdt.Message{Text: text, Patient: patient}); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dirB, "sealed-inbox")
	waitFile(t, spool)
	raw, err := os.ReadFile(spool)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), text) || strings.Contains(string(raw), patient) {
		t.Fatal("the sealed inbox holds plaintext")
	}
	if err := b.Unlock([]byte(pass)); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "judged what arrived while locked", "envelopes=")
	if logs.has("judged what arrived while locked", "envelopes=0 ") {
		t.Fatal("nothing that arrived while locked was judged at unlock")
	}
	ms, err := current(t, b).Messages(ref)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range ms {
		found = found || m.Text == text
	}
	if !found {
		t.Fatalf("B shows %d messages after unlock, not the one sent while it was locked; log:\n%s", len(ms), strings.Join(logs.lines, "\n"))
	}
	if _, err := os.Stat(spool); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the sealed inbox is still there after unlock: %v", err)
	}
}

func waitMembers(t *testing.T, n *node.Node, ref string, want int) {
	t.Helper()
	poll(t, "members", func() bool {
		ti, err := n.Team(ref)
		return err == nil && ti.Members >= want
	})
}

func waitTopicPeer(t *testing.T, n *node.Node, s *session.Session) {
	t.Helper()
	poll(t, "the locked device in the team's topic with A", func() bool {
		ld := s.Carrier()
		return ld != nil && ld.InTopics(n.Host().ID())
	})
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	poll(t, path, func() bool {
		fi, err := os.Stat(path)
		return err == nil && fi.Size() > 0
	})
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

// After Wipe, the data directory holds no keyring and no file, the store does not open with the right
// passphrase, and the session refuses everything.
func TestWipeLeavesNoKey(t *testing.T) {
	for _, lockFirst := range []bool{false, true} {
		dir, st := newStore(t, "Dr Banda")
		wiped := make(chan struct{})
		s := start(t, dir, st, func(c *session.Config) { c.OnWipe = func() { close(wiped) } })
		if _, err := current(t, s).CreateTeam("Ward", crdt.Clinical); err != nil {
			t.Fatal(err)
		}
		if lockFirst {
			if err := s.Lock(); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Wipe(); err != nil {
			t.Fatal(err)
		}
		<-wiped
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("locked=%v: the wiped directory still holds %q", lockFirst, names)
		}
		if _, err := storage.Open(dir, storage.Options{Passphrase: []byte(pass)}); !errors.Is(err, storage.ErrNotInitialized) {
			t.Errorf("locked=%v: Open after the wipe: %v; want ErrNotInitialized", lockFirst, err)
		}
		if _, _, err := s.Current(); !errors.Is(err, session.ErrWiped) {
			t.Errorf("locked=%v: Current after the wipe: %v", lockFirst, err)
		}
	}
}

// A locked device still gets a remote wipe order: the admin removes B and orders its wipe while B is
// locked; when B's locked host next connects to the admin, it fetches the order, checks it against the
// admins it knew when it locked, and wipes.
func TestLockedDeviceWipesOnOrder(t *testing.T) {
	dirA, stA := newStore(t, "Dr Banda")
	defer stA.Close()
	a := start(t, dirA, stA, nil)
	na := current(t, a)
	dirB, stB := newStore(t, "Lost Phone")
	wiped := make(chan struct{})
	b := start(t, dirB, stB, func(c *session.Config) {
		c.Node.Bootstrap = []string{na.Host().Addrs()[0].String() + "/p2p/" + na.Host().ID().String()}
		c.Node.RedialInterval, c.Node.WipeAsk = 50*time.Millisecond, 50*time.Millisecond
		c.OnWipe = func() { close(wiped) }
	})
	team, err := na.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	inv, err := na.Invite(ref, 0)
	if err != nil {
		t.Fatal(err)
	}
	nb := current(t, b)
	bID := nb.Identity().Device.ID()
	if _, err := nb.Join(context.Background(), inv.Code()); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, na, ref, 2)
	if err := b.Lock(); err != nil {
		t.Fatal(err)
	}
	if _, err := na.RemoteWipe(ref, bID.String()[:16], 0); err != nil {
		t.Fatal(err)
	}
	// B's locked host may have connected, and asked, before the order existed: it asks its connected
	// peers again each WipeAsk.
	select {
	case <-wiped:
	case <-time.After(30 * time.Second):
		t.Fatal("the locked device did not wipe on the admin's order")
	}
	if _, err := os.Stat(filepath.Join(dirB, "keyring")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("B's keyring after the wipe: %v", err)
	}
}

// A device that has not reached a member or relay for UnreachedLock locks itself.
func TestUnreachedLock(t *testing.T) {
	dir, st := newStore(t, "Dr Banda")
	clk := &clock{t: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	s := start(t, dir, st, func(c *session.Config) {
		c.Now, c.UnreachedLock, c.CheckEvery = clk.Now, 72*time.Hour, time.Millisecond
		c.Node.Now = clk.Now
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	_, gone, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(71 * time.Hour)
	s.Touch() // in use all along: the idle rule is off here, this rule is not about use
	clk.Add(time.Hour)
	select {
	case <-gone:
	case <-time.After(30 * time.Second):
		t.Fatal("not locked 72 hours after the last contact with the team")
	}
}
