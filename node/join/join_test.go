package join

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeInviter is an inviter's device reduced to a map of open invites and a record of what Serve
// asked of it. Its Admit admits everyone unless admit is set.
type fakeInviter struct {
	mu      sync.Mutex
	open    map[[16]byte][]byte
	vet     func(Joiner) error
	admit   func(Record, Joiner) (Admission, error)
	used    int
	admits  []Joiner
	lookups int
}

var _ Inviter = (*fakeInviter)(nil)

func (f *fakeInviter) Invite(id [16]byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	b, ok := f.open[id]
	if !ok {
		return nil, ErrInviteUnknown
	}
	return b, nil
}

func (f *fakeInviter) Vet(j Joiner) error {
	if f.vet != nil {
		return f.vet(j)
	}
	return nil
}

func (f *fakeInviter) Use(id [16]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.open[id]; !ok {
		return ErrInviteUnknown
	}
	delete(f.open, id)
	f.used++
	return nil
}

func (f *fakeInviter) Admit(rec Record, j Joiner) (Admission, error) {
	f.mu.Lock()
	f.admits = append(f.admits, j)
	f.mu.Unlock()
	if f.admit != nil {
		return f.admit(rec, j)
	}
	return testAdmission(rec.Team), nil
}

func (f *fakeInviter) isOpen(id [16]byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.open[id]
	return ok
}

func testAdmission(team crdt.TeamID) Admission {
	return Admission{Team: team, Genesis: crdt.OpID{7}, History: []device.HistoryItem{
		{Op: []byte("genesis op"), Env: []byte("its envelope")},
		{Op: []byte("commit op")},
	}}
}

func newDevice(t *testing.T) *identity.Device {
	t.Helper()
	d, err := identity.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pair is an inviter with one open invite, and a joiner holding its code.
type pair struct {
	prekey          identity.NoisePublic // the joiner's
	inviter, joiner *identity.Device
	inv             Invite
	rec             Record
	invites         *fakeInviter
	now             time.Time
}

func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{prekey: testPrekey(t), inviter: newDevice(t), joiner: newDevice(t), now: time.Unix(1_800_000_000, 0)}
	inv, err := NewInvite(p.now, time.Hour, testInvite(t).Inviter)
	if err != nil {
		t.Fatal(err)
	}
	p.inv = inv
	p.rec = Record{Team: crdt.TeamID{1, 2, 3}, Secret: inv.Secret, Expires: inv.Expires}
	p.invites = &fakeInviter{open: map[[16]byte][]byte{inv.ID: p.rec.Marshal()}}
	return p
}

// run runs Ask with code inv against Serve over net.Pipe, the server seeing the connection as device
// conn, and returns both ends' results. Each end closes its side when it returns, as a node closes
// or resets its stream.
func (p *pair) run(inv Invite, name string, conn identity.DeviceID) (Admission, error, error) {
	c, s := net.Pipe()
	srv := Server{Device: p.inviter, Invites: p.invites, Now: func() time.Time { return p.now }}
	serveErr := make(chan error, 1)
	go func() {
		defer s.Close()
		serveErr <- srv.Serve(s, conn)
	}()
	adm, err := Ask(c, p.joiner, name, p.prekey, inv)
	c.Close()
	return adm, err, <-serveErr
}

func sameAdmission(a, b Admission) bool {
	if a.Team != b.Team || a.Genesis != b.Genesis || len(a.History) != len(b.History) {
		return false
	}
	for i := range a.History {
		if !bytes.Equal(a.History[i].Op, b.History[i].Op) || !bytes.Equal(a.History[i].Env, b.History[i].Env) {
			return false
		}
	}
	return true
}

func TestAdmitted(t *testing.T) {
	p := newPair(t)
	adm, err, serveErr := p.run(p.inv, "Nurse Phiri", p.joiner.ID())
	if err != nil || serveErr != nil {
		t.Fatalf("Ask: %v; Serve: %v", err, serveErr)
	}
	if want := testAdmission(p.rec.Team); !sameAdmission(adm, want) {
		t.Errorf("admission %+v; want %+v", adm, want)
	}
	want := Joiner{Device: p.joiner.ID(), Noise: p.joiner.NoisePublic(), Name: "Nurse Phiri", Prekey: p.prekey}
	if len(p.invites.admits) != 1 || p.invites.admits[0] != want {
		t.Errorf("Admit saw %+v; want one call with %+v", p.invites.admits, want)
	}
	if p.invites.used != 1 || p.invites.isOpen(p.inv.ID) {
		t.Errorf("the invite was used %d times and is open: %v; want used once, closed", p.invites.used, p.invites.isOpen(p.inv.ID))
	}

	// One-time: the same code again is refused without a word.
	_, err, serveErr = p.run(p.inv, "Nurse Phiri", p.joiner.ID())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "unknown, already used or expired") {
		t.Errorf("second use: Ask: %v; want a refusal saying the code is unknown or used", err)
	}
	if !errors.Is(serveErr, ErrInviteUnknown) {
		t.Errorf("second use: Serve: %v; want ErrInviteUnknown", serveErr)
	}
}

// TestLargeAnswer sends an admission larger than one Noise message holds.
func TestLargeAnswer(t *testing.T) {
	p := newPair(t)
	big := Admission{Team: p.rec.Team, Genesis: crdt.OpID{1}}
	for i := range 5 {
		big.History = append(big.History, device.HistoryItem{Op: bytes.Repeat([]byte{byte(i)}, 30000), Env: bytes.Repeat([]byte{9}, 20000)})
	}
	p.invites.admit = func(Record, Joiner) (Admission, error) { return big, nil }
	adm, err, serveErr := p.run(p.inv, "Nurse Phiri", p.joiner.ID())
	if err != nil || serveErr != nil {
		t.Fatalf("Ask: %v; Serve: %v", err, serveErr)
	}
	if !sameAdmission(adm, big) {
		t.Errorf("a %d-item admission of %d bytes did not arrive whole", len(big.History), len(answer{Admission: big}.marshal()))
	}
}

// TestRefusals drives every refusal: what the joiner is told, whether Serve sent an answer, and
// whether the invite is still open afterwards.
func TestRefusals(t *testing.T) {
	type setup func(p *pair) (inv Invite, name string, conn identity.DeviceID)
	asked := func(p *pair) (Invite, string, identity.DeviceID) { return p.inv, "Nurse Phiri", p.joiner.ID() }
	for _, tc := range []struct {
		name     string
		setup    setup
		reason   string // in Ask's error
		answered bool   // Serve sent an answer (returned nil)
		open     bool   // the invite is still open afterwards
	}{
		{"wrong secret", func(p *pair) (Invite, string, identity.DeviceID) {
			inv := p.inv
			inv.Secret[0] ^= 1
			return inv, "Nurse Phiri", p.joiner.ID()
		}, "wrong, already used or expired", false, true},
		{"unknown invite", func(p *pair) (Invite, string, identity.DeviceID) {
			inv := p.inv
			inv.ID[0] ^= 1
			return inv, "Nurse Phiri", p.joiner.ID()
		}, "unknown, already used or expired", false, true},
		{"malformed record", func(p *pair) (Invite, string, identity.DeviceID) {
			p.invites.open[p.inv.ID] = []byte{1, 2, 3}
			return asked(p)
		}, "unknown, already used or expired", false, true},
		{"device is not the connection's", func(p *pair) (Invite, string, identity.DeviceID) {
			return p.inv, "Nurse Phiri", p.inviter.ID()
		}, "device id does not match the connection's key", true, true},
		{"connection of no device", func(p *pair) (Invite, string, identity.DeviceID) {
			return p.inv, "Nurse Phiri", identity.DeviceID{}
		}, "device id does not match the connection's key", true, true},
		{"vetted out", func(p *pair) (Invite, string, identity.DeviceID) {
			p.invites.vet = func(j Joiner) error { return errors.New("name " + j.Name + " is not allowed") }
			return p.inv, "Bad", p.joiner.ID()
		}, "name Bad is not allowed", true, true},
		{"used meanwhile", func(p *pair) (Invite, string, identity.DeviceID) {
			p.invites.vet = func(Joiner) error { p.invites.Use(p.inv.ID); return nil }
			return asked(p)
		}, "invite code already used", true, false},
		{"expired", func(p *pair) (Invite, string, identity.DeviceID) {
			p.now = p.inv.Expires
			return asked(p)
		}, "invite code has expired", true, false},
		{"refused by Admit", func(p *pair) (Invite, string, identity.DeviceID) {
			p.invites.admit = func(Record, Joiner) (Admission, error) { return Admission{}, Refuse("the name is taken") }
			return asked(p)
		}, "the name is taken", true, false},
		{"Admit failed", func(p *pair) (Invite, string, identity.DeviceID) {
			p.invites.admit = func(Record, Joiner) (Admission, error) { return Admission{}, errors.New("disk on fire") }
			return asked(p)
		}, "the inviter could not admit this device", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t)
			inv, name, conn := tc.setup(p)
			adm, err, serveErr := p.run(inv, name, conn)
			var re *RefusedError
			if !errors.As(err, &re) || !errors.Is(err, ErrRefused) || !strings.Contains(re.Reason, tc.reason) {
				t.Errorf("Ask: %+v, %v; want a refusal saying %q", adm, err, tc.reason)
			}
			if strings.Contains(err.Error(), "disk on fire") {
				t.Errorf("Ask: %v; the inviter's own error reached the joiner", err)
			}
			if (serveErr == nil) != tc.answered {
				t.Errorf("Serve: %v; want an answer sent: %v", serveErr, tc.answered)
			}
			if got := p.invites.isOpen(p.inv.ID); got != tc.open {
				t.Errorf("invite open afterwards: %v; want %v", got, tc.open)
			}
			if tc.open && p.invites.used != 0 {
				t.Errorf("Use succeeded %d times; want none", p.invites.used)
			}
			if !tc.answered && len(p.invites.admits) != 0 {
				t.Errorf("Admit was asked about a joiner that did not prove the code")
			}
		})
	}
}

// TestVetLeavesCodeUsable: a joiner refused for its name uses the same code again with another.
func TestVetLeavesCodeUsable(t *testing.T) {
	p := newPair(t)
	p.invites.vet = func(j Joiner) error {
		if j.Name == "" {
			return errors.New("name is empty")
		}
		return nil
	}
	if _, err, _ := p.run(p.inv, "", p.joiner.ID()); !errors.Is(err, ErrRefused) {
		t.Fatalf("empty name: %v; want a refusal", err)
	}
	if _, err, serveErr := p.run(p.inv, "Nurse Phiri", p.joiner.ID()); err != nil || serveErr != nil {
		t.Fatalf("the same code with a good name: Ask: %v; Serve: %v", err, serveErr)
	}
}

// TestOneWinner runs several joiners with one code at once: exactly one is admitted.
func TestOneWinner(t *testing.T) {
	p := newPair(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		q := *p
		q.joiner = newDevice(t)
		wg.Go(func() { _, errs[i], _ = q.run(p.inv, "Joiner", q.joiner.ID()) })
	}
	wg.Wait()
	admitted := 0
	for _, err := range errs {
		switch {
		case err == nil:
			admitted++
		case !errors.Is(err, ErrRefused):
			t.Errorf("a losing joiner: %v; want a refusal", err)
		}
	}
	if admitted != 1 || len(p.invites.admits) != 1 {
		t.Errorf("%d joiners admitted, Admit called %d times; want 1 and 1", admitted, len(p.invites.admits))
	}
}
