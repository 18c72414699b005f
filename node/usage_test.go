package node

// Node-level tests of data accounting (package usage) and low-data mode (package lowdata): the
// packages' own tests cover their logic; these run them inside nodes, over mocknet.

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/meshconf"
	"github.com/fieldmesh/fieldmesh/node/usage"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

func testPeer(t *testing.T) peer.ID {
	t.Helper()
	d, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PeerID(d.ID())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUsageSurvivesRestart: counts reach the store when the node closes and are in the next run's
// report, merged with what that run counts.
func TestUsageSurvivesRestart(t *testing.T) {
	_, ns := newMockNodes(t, "Solo")
	a := ns[0]
	team, err := a.CreateTeam("Night shift", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	topic := envelope.TopicOf(team.ID)
	month := time.Now().Format("2006-01")
	a.usage.SyncBytes(topic, 1000, 2000)
	a.usage.LogSentMessageStream(300, SyncProtocol, testPeer(t))
	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true, SyncInterval: time.Hour, RedialInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	a2.usage.SyncBytes(topic, 1, 2)
	r, err := a2.Usage(month)
	if err != nil {
		t.Fatal(err)
	}
	if r.Total.Sent != 300 || len(r.Teams) != 1 || r.Teams[0].Name != "Night shift" || r.Teams[0].Sync != (usage.Bytes{Sent: 1001, Received: 2002, Total: 3003}) {
		t.Errorf("after restart: total %+v teams %+v; want 300 sent and Night shift with 1001/2002 of sync", r.Total, r.Teams)
	}
}

// TestLowDataOutbox: in low-data mode a routine message is queued, not sealed or sent, while an
// urgent one goes out; the queue survives a restart (as does the mode) and is published once when
// the mode goes off.
func TestLowDataOutbox(t *testing.T) {
	_, ns := newMockNodes(t, "Nurse Phiri", "Dr Banda")
	a, b := ns[0], ns[1]
	team, ref := clinicalTeam(t, a, "Ward 3", b)
	if s, err := a.SetLowData(true); err != nil || !s.On {
		t.Fatalf("SetLowData(true) = %+v, %v", s, err)
	}
	routine, _, err := a.Send(ref, crdt.Message{Text: "routine: stock count"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Send(ref, crdt.Message{Text: "urgent: bleeding", Priority: crdt.Urgent}); err != nil {
		t.Fatal(err)
	}
	if ms := waitMessages(t, b, ref, 1); ms[0].Text != "urgent: bleeding" {
		t.Errorf("b got %q first; want the urgent message", ms[0].Text)
	}
	if a.teamByID(team.ID).has(routine) {
		t.Error("the queued message is in the team log already")
	}
	if s, _ := a.LowData(); s.Queued != 1 || s.UrgentTeams > 1 {
		t.Errorf("status %+v; want 1 queued", s)
	}

	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true, SyncInterval: time.Hour, RedialInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a2.Close() })
	if s, err := a2.LowData(); err != nil || !s.On || s.Queued != 1 {
		t.Fatalf("after restart: %+v, %v; want on with 1 queued", s, err)
	}
	if a2.teamByID(team.ID).has(routine) {
		t.Error("the queued message was published at start in low-data mode")
	}
	var queued []byte
	var queuedKey storage.OutboxKey
	if err := a.st.Outbox(func(k storage.OutboxKey, b []byte) error {
		queuedKey, queued = k, b
		return nil
	}); err != nil || queuedKey.ID != routine {
		t.Fatalf("outbox holds %x (%v); want the routine message", queuedKey.ID, err)
	}
	s, err := a2.SetLowData(false)
	if err != nil || s.On || s.Queued != 0 {
		t.Fatalf("SetLowData(false) = %+v, %v; want off with nothing queued", s, err)
	}
	if !a2.teamByID(team.ID).has(routine) {
		t.Error("the queued message is not in the team log after publishing")
	}
	ms := waitMessages(t, b, ref, 2)
	if ms[0].ID != routine && ms[1].ID != routine {
		t.Errorf("b shows %v; want the routine message %v among them", ids(ms), routine)
	}
	// Published once: flushing again publishes nothing, and an entry for an op already published
	// (a crash between publishing and dequeuing) is only removed.
	if n, err := a2.low.Flush(a2.publishQueued); err != nil || n != 0 {
		t.Errorf("second flush published %d (%v); want 0", n, err)
	}
	if err := a.st.PutOutbox(queuedKey, queued); err != nil {
		t.Fatal(err)
	}
	if n, err := a2.low.Flush(a2.publishQueued); err != nil || n != 0 {
		t.Errorf("flush of an already published op published %d (%v); want 0", n, err)
	}
	if s, _ := a2.LowData(); s.Queued != 0 {
		t.Errorf("%d still queued; want 0", s.Queued)
	}
	if n, err := a2.SyncNow(context.Background()); err != nil || n != 1 {
		t.Errorf("SyncNow = %d, %v; want 1 (one peer, one team)", n, err)
	}
}

// TestLowDataDefersAcks: in low-data mode the node's upkeep makes no acknowledgement ops; when the
// mode is turned off they go out (computed from the log then, so nothing is lost).
func TestLowDataDefersAcks(t *testing.T) {
	_, ns := newMockNodes(t, "Author", "Reader")
	a, r := ns[0], ns[1]
	_, ref := clinicalTeam(t, a, "Ward", r)
	if _, _, err := a.Send(ref, crdt.Message{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, r, ref, 1)
	if _, err := r.SetLowData(true); err != nil {
		t.Fatal(err)
	}
	if !r.low.On() {
		t.Error("the mode is off after SetLowData(true)")
	}
	r.tickAll()
	if got := r.mustMessages(t, ref)[0].ReceivedBy; len(got) != 0 {
		t.Fatalf("the reader acknowledged in low-data mode: %v", got)
	}
	if _, err := r.SetLowData(false); err != nil {
		t.Fatal(err)
	}
	ch, cancel, err := a.Watch(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for len(a.mustMessages(t, ref)[0].ReceivedBy) != 1 {
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("the author never saw the deferred acknowledgement")
		}
	}
}

// TestLowDataGatesAutoSync: in low-data mode automatic reconciliation runs only for a team with an
// urgent op pending, until a session for it completes; the marks survive a restart.
func TestLowDataGatesAutoSync(t *testing.T) {
	_, ns := newMockNodes(t, "Solo")
	a := ns[0]
	info, err := a.CreateTeam("Night shift", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	tm := a.teamByID(info.ID)
	if !a.autoSyncAllowed(tm) {
		t.Error("auto sync refused with low-data mode off")
	}
	if _, err := a.SetLowData(true); err != nil {
		t.Fatal(err)
	}
	if a.autoSyncAllowed(tm) {
		t.Error("auto sync allowed in low-data mode with nothing urgent")
	}
	if _, _, err := a.Send(info.ID.String(), crdt.Message{Text: "emergency", Priority: crdt.Emergency}); err != nil {
		t.Fatal(err)
	}
	if !a.autoSyncAllowed(tm) {
		t.Error("auto sync refused with an emergency message pending")
	}
	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a2.Close() })
	tm = a2.teamByID(info.ID)
	if s, _ := a2.LowData(); !s.On || s.UrgentTeams != 1 || !a2.autoSyncAllowed(tm) {
		t.Errorf("after restart: %+v, allowed %v; want on, 1 urgent team, allowed", s, a2.autoSyncAllowed(tm))
	}
	a2.lowDataSynced(tm)
	if a2.autoSyncAllowed(tm) {
		t.Error("auto sync still allowed after a completed session")
	}
	// Turning the mode off with an urgent mark set drops the mark, in the store too.
	if _, _, err := a2.Send(info.ID.String(), crdt.Message{Text: "urgent", Priority: crdt.Urgent}); err != nil {
		t.Fatal(err)
	}
	if s, err := a2.SetLowData(false); err != nil || s.On || s.UrgentTeams != 0 {
		t.Fatalf("SetLowData(false) = %+v, %v; want off, nothing urgent", s, err)
	}
	if !a2.autoSyncAllowed(tm) {
		t.Error("auto sync refused after low-data mode went off")
	}
	a2.Close()
	a3, err := New(Config{Store: a.st, Host: h, NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a3.Close()
	if s, _ := a3.LowData(); s.On || s.UrgentTeams != 0 {
		t.Errorf("after another restart: %+v; want off, nothing urgent", s)
	}
}

// TestConfigLowDataForcesOn: Config.LowData turns the mode on at start, and keeps it on afterwards.
func TestConfigLowDataForcesOn(t *testing.T) {
	_, ns := newMockNodes(t, "Solo")
	a := ns[0]
	h := a.host
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := New(Config{Store: a.st, Host: h, NoMDNS: true, LowData: true})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := a2.LowData(); !s.On {
		t.Error("Config.LowData did not turn the mode on")
	}
	a2.Close()
	a3, err := New(Config{Store: a.st, Host: h, NoMDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a3.Close()
	if s, _ := a3.LowData(); !s.On {
		t.Error("the mode did not survive a restart without the flag")
	}
}

func TestTopicName(t *testing.T) {
	var a, b envelope.Topic
	a[0], a[15] = 0xab, 0xcd
	b[0], b[15] = 0xab, 0xce // differs after the bytes the name carries
	if got, want := meshconf.TopicName(a), "fm9/qwAAAAAAAAAA"; got != want {
		t.Errorf("meshconf.TopicName(%x) = %q; want %q", a[:], got, want)
	}
	if meshconf.TopicName(a) != meshconf.TopicName(b) {
		t.Errorf("the topic name depends on more than its first %d bytes", meshconf.TopicNameBytes)
	}
	b[meshconf.TopicNameBytes-1] ^= 1
	if meshconf.TopicName(a) == meshconf.TopicName(b) {
		t.Errorf("topics that differ in byte %d have one name", meshconf.TopicNameBytes-1)
	}
}
