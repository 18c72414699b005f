package mobile

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/node/proximity/proximitytest"
	"github.com/fieldmesh/fieldmesh/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	)
}

// events records what the facade tells the app.
type events struct {
	changed chan string
	stopped chan struct{}
}

func newEvents() *events {
	return &events{changed: make(chan string, 256), stopped: make(chan struct{}, 4)}
}

func (e *events) TeamChanged(id string) { e.changed <- id }
func (e *events) Stopped()              { e.stopped <- struct{}{} }

// nativeRadio is what the app's native code does: it reports the radio's callbacks to the Node's
// Radio* methods.
type nativeRadio struct{ n *Node }

func (r nativeRadio) Found(ep, name string)        { r.n.RadioFound(ep, name) }
func (r nativeRadio) Lost(ep string)               { r.n.RadioLost(ep) }
func (r nativeRadio) Incoming(ep string)           { r.n.RadioIncoming(ep) }
func (r nativeRadio) Received(ep string, p []byte) { r.n.RadioReceived(ep, p) }
func (r nativeRadio) Disconnected(ep string)       { r.n.RadioDisconnected(ep) }

// phone makes a Node on a fresh directory, with a radio on air and no IP listening at all.
func phone(t *testing.T, air *proximitytest.Air) (*Node, *events) {
	t.Helper()
	m := NewNode(t.TempDir())
	m.kdf = storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	r := air.NewRadio()
	r.Attach(nativeRadio{m})
	m.SetRadio(r)
	m.SetListen("off", true)
	ev := newEvents()
	m.SetEvents(ev)
	t.Cleanup(func() { m.Stop() })
	return m, ev
}

// waitChanged waits, with a deadline, for the Events to hear that team changed.
func waitChanged(t *testing.T, ev *events, team string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case id := <-ev.changed:
			if id == team {
				return
			}
		case <-deadline:
			t.Fatalf("no TeamChanged(%s) before the deadline", team)
		}
	}
}

// TestPhones drives two phones through the facade only, over the in-memory radio: create, invite,
// join, send both ways with the callback saying when to re-read, members, lock and unlock, stop and restart.
func TestPhones(t *testing.T) {
	air := proximitytest.New()
	t.Cleanup(air.Close)
	a, aev := phone(t, air)
	b, bev := phone(t, air)

	if _, err := a.Teams(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Teams before Start: %v; want ErrNotStarted", err)
	}
	if err := a.Create("Dr Banda", ""); err == nil || a.Exists() {
		t.Fatalf("Create with no passphrase: %v, store made %v; want a refusal and nothing made", err, a.Exists())
	}
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
	if _, err := a.CreateTeam("Ward", "party"); err == nil || strings.Contains(err.Error(), "crdt:") {
		t.Errorf("a team of an unknown kind: %v; want a refusal without package prefix", err)
	}
	code, err := a.Invite(team.ID, 3600)
	if err != nil {
		t.Fatal(err)
	}
	joined, err := b.Join(code)
	if err != nil {
		t.Fatalf("join over the radio: %v", err)
	}
	if joined.ID != team.ID || joined.Name != "Maternity Ward 3" {
		t.Errorf("joined %+v; want %s", joined, team.ID)
	}

	id, err := a.Send(team.ID, "Bed 4: BP 160/110", "urgent", "MRN-448812", "")
	if err != nil {
		t.Fatal(err)
	}
	waitMessage(t, b, bev, team.ID, "Bed 4: BP 160/110")
	ms, err := b.Messages(team.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := ms.Get(ms.Len() - 1)
	if got.ID != id || got.AuthorName != "Dr Banda" || got.Priority != "urgent" || got.Patient != "MRN-448812" || got.TimeMillis == 0 {
		t.Errorf("B shows %+v", got)
	}
	if ms.Get(-1) != nil || ms.Get(ms.Len()) != nil {
		t.Error("Get out of range returned a message")
	}
	if _, err := b.Send(team.ID, "On my way", "", "", id[:8]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Send(team.ID, "reply to nothing", "", "", "00000000"); err == nil {
		t.Error("a reply to a message that does not exist was sent")
	}
	waitMessage(t, a, aev, team.ID, "On my way")
	ms, _ = a.Messages(team.ID, 1)
	if ms.Len() != 1 || ms.Get(0).ReplyTo != id {
		t.Errorf("A's newest message: %+v; want the reply to %s", ms.Get(0), id)
	}

	mem, err := a.Members(team.ID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := 0; i < mem.Len(); i++ {
		names = append(names, mem.Get(i).Name)
	}
	if strings.Join(names, ",") != "Dr Banda,Nurse Phiri" {
		t.Errorf("members %v", names)
	}

	// Lock and Unlock over the radio: the node that starts at Unlock has a radio again.
	if err := a.Lock(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Teams(); !errors.Is(err, ErrLocked) {
		t.Fatalf("Teams while locked: %v; want ErrLocked", err)
	}
	if err := a.Unlock("pass a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Send(team.ID, "After the lock", "", "", ""); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, a, aev, team.ID, "After the lock")
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-aev.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("no Stopped event")
	}
	if err := a.Start("wrong"); err == nil || err.Error() != "wrong passphrase" {
		t.Fatalf("Start with a wrong passphrase: %v", err)
	}
	if err := a.Start("pass a"); err != nil {
		t.Fatal(err)
	}
	ts, err := a.Teams()
	if err != nil || ts.Len() != 1 || ts.Get(0).Name != "Maternity Ward 3" || ts.Get(0).Messages != 3 || !ts.Get(0).Admin {
		t.Fatalf("teams after restart: %v %+v", err, ts.Get(0))
	}
}

// waitMessage waits for the Events to say the team changed until the node shows text.
func waitMessage(t *testing.T, m *Node, ev *events, team, text string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ms, err := m.Messages(team, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < ms.Len(); i++ {
			if ms.Get(i).Text == text {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not shown before the deadline", text)
		}
		waitChanged(t, ev, team)
	}
}
