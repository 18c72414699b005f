package relay

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/relay/relayclient"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// member is a test device with a fieldmesh identity: its libp2p host runs on the device's key, as a
// node's does, so the relay reads its device id from the connection.
type member struct {
	*device
	id *identity.Device
}

func newMember(t *testing.T) *member {
	t.Helper()
	id, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := lcrypto.UnmarshalEd25519PrivateKey(id.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &member{device: &device{h: h}, id: id}
}

// roster is the roster of topic at seq that signer signs.
func roster(signer *member, topic envelope.Topic, seq uint64, members []*member, admins ...*member) []byte {
	ids := func(ms []*member) []identity.DeviceID {
		var out []identity.DeviceID
		for _, m := range ms {
			out = append(out, m.id.ID())
		}
		return out
	}
	ro := relayproto.NewRoster(topic, seq, ids(members), ids(admins))
	ro.Sign(signer.id.ID(), signer.id.Sign)
	return ro.Marshal()
}

// enrolWith enrols one topic at r, with a roster or none, and returns the relay's answer.
func (m *member) enrolWith(t *testing.T, r *Relay, c relayproto.Code, ro []byte) relayproto.EnrolResult {
	t.Helper()
	res, err := relayclient.Enrol(context.Background(), m.h, r.Host().ID(), map[envelope.Topic]relayproto.Key{c.Topic: c.Key}, map[envelope.Topic][]byte{c.Topic: ro})
	if err != nil || len(res) != 1 {
		t.Fatalf("enrol: %v, %v", res, err)
	}
	return res[0]
}

// TestRosterAdmission: leavers lose their relay. Every member, present or past, holds the relay key;
// once the team's admin hands the relay a roster, the relay enrols only the devices on it, ends at once
// the enrolments and directory entries of a device a newer roster leaves out, and takes no roster
// that the code's admin (or an admin of the roster it holds) did not sign, nor an older one; it keeps
// the roster across a restart.
func TestRosterAdmission(t *testing.T) {
	dir := t.TempDir()
	logs := &logBuffer{}
	cfg := Config{Dir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			r.Close()
		}
	})
	admin, nurse, leaver := newMember(t), newMember(t), newMember(t)
	c := relayproto.CodeFor(teamA, admin.id.ID())
	if _, err := r.Admit(c); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{admin, nurse, leaver} {
		m.connect(t, r)
	}
	// Before any roster, the relay key is all a device shows.
	if res := leaver.enrolWith(t, r, c, nil); !res.OK() {
		t.Fatalf("enrolling before any roster: %+v; want enrolled", res)
	}
	// The leaver's own roster is not the code's admin's.
	forged := roster(leaver, c.Topic, 9, []*member{leaver}, leaver)
	if res := leaver.enrolWith(t, r, c, forged); res.Status != relayproto.StatusBadRoster || !strings.Contains(res.Message, "not an admin this relay trusts") {
		t.Errorf("a roster not signed by the code's admin: %+v; want StatusBadRoster", res)
	}
	first := roster(admin, c.Topic, 1, []*member{nurse, leaver}, admin)
	if res := admin.enrolWith(t, r, c, first); !res.OK() {
		t.Fatalf("admin enrolling with the first roster: %+v", res)
	}
	if res := nurse.enrolWith(t, r, c, nil); !res.OK() {
		t.Fatalf("nurse on the first roster: %+v", res)
	}
	if _, err := relayclient.Directory(context.Background(), leaver.h, r.Host().ID(), c.Topic, nil); err != nil {
		t.Fatalf("leaver's directory while still on the roster: %v", err)
	}

	// The leaver is removed: the admin's next roster leaves it out.
	second := roster(admin, c.Topic, 2, []*member{nurse}, admin)
	if res := admin.enrolWith(t, r, c, second); !res.OK() {
		t.Fatalf("admin enrolling with the second roster: %+v", res)
	}
	if r.enrolledFor(leaver.h.ID(), c.Topic) || !r.enrolledFor(nurse.h.ID(), c.Topic) {
		t.Errorf("after the second roster: leaver enrolled %v, nurse %v; want false, true", r.enrolledFor(leaver.h.ID(), c.Topic), r.enrolledFor(nurse.h.ID(), c.Topic))
	}
	if peers, err := relayclient.Directory(context.Background(), leaver.h, r.Host().ID(), c.Topic, nil); !errors.Is(err, relayclient.ErrRefused) || len(peers) != 0 {
		t.Errorf("leaver's directory after its removal: %v, %v; want refused, no peers", peers, err)
	}
	if err := leaver.sync(r, c.Topic, newMemSource()); err == nil {
		t.Error("leaver's sync after its removal: succeeded; want refused")
	}
	for name, ro := range map[string][]byte{"none": nil, "the first roster, replayed": first, "its own": forged} {
		if res := leaver.enrolWith(t, r, c, ro); res.OK() {
			t.Errorf("leaver enrolling again with %s: %+v; want refused", name, res)
		}
	}
	if res := leaver.enrolWith(t, r, c, nil); res.Status != relayproto.StatusNotMember {
		t.Errorf("leaver enrolling again: %+v; want StatusNotMember", res)
	}
	if !strings.Contains(logs.String(), `msg="topic roster updated"`) || strings.Contains(logs.String(), leaver.h.ID().String()) {
		t.Errorf("the relay's log does not report the roster, or names a device by its full id:\n%s", logs.String())
	}

	// After a restart the relay still holds the second roster.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	r, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	leaver.connect(t, r)
	nurse.connect(t, r)
	if res := leaver.enrolWith(t, r, c, nil); res.Status != relayproto.StatusNotMember {
		t.Errorf("leaver enrolling after a restart: %+v; want StatusNotMember", res)
	}
	if res := nurse.enrolWith(t, r, c, nil); !res.OK() {
		t.Errorf("nurse enrolling after a restart: %+v; want enrolled", res)
	}

	// The operator revokes the topic: nothing of it is enrolled, carried or stored.
	if _, err := r.Revoke(c.Topic.Short()); err != nil {
		t.Fatal(err)
	}
	if res := nurse.enrolWith(t, r, c, nil); res.Status != relayproto.StatusNotCarried {
		t.Errorf("enrolling a revoked topic: %+v; want StatusNotCarried", res)
	}
	if st := r.Status(); len(st.Topics) != 0 || st.Envelopes != 0 {
		t.Errorf("status after revoking the only topic: %+v", st)
	}
	if _, err := r.Revoke(c.Topic.Short()); !errors.Is(err, ErrNotCarried) {
		t.Errorf("revoking it again: %v; want ErrNotCarried", err)
	}
}
