package device

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// This file is a small test harness over Team: devices with a map for a
// store, a virtual clock, and delivery of what one device publishes or
// stores to others, as a node would by gossip and reconciliation.

// t0 is the harness's start of time.
var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// detRand returns a deterministic reader for the seed.
func detRand(seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

// memStore is what a node's store would hold of one team.
type memStore struct {
	keys []byte
	ops  map[crdt.OpID][]byte
	envs map[crdt.OpID]Record
	// dropped are the messages whose attachment chunks a Write deleted.
	dropped []crdt.OpID
	// alerts is the alert state (Write.Alerts).
	alerts []byte
}

func newMemStore() *memStore {
	return &memStore{ops: make(map[crdt.OpID][]byte), envs: make(map[crdt.OpID]Record)}
}

func (s *memStore) write(w Write) {
	for _, r := range w.Envelopes {
		s.envs[r.ID] = r
	}
	for _, r := range w.Ops {
		s.ops[r.ID] = r.Data
	}
	if w.Keys != nil {
		s.keys = w.Keys
	}
	s.dropped = append(s.dropped, w.DropChunks...)
	if w.Alerts != nil {
		s.alerts = w.Alerts
	}
}

func (s *memStore) stored() Stored {
	st := Stored{Keys: s.keys, Alerts: s.alerts}
	for _, b := range s.ops {
		st.Ops = append(st.Ops, b)
	}
	for id, r := range s.envs {
		e, err := envelope.Unmarshal(envelope.Topic{}, r.Data)
		if err != nil {
			panic(err)
		}
		st.Envelopes = append(st.Envelopes, Ref{Time: r.Time, ID: id, Epoch: e.Epoch})
		if e.Form() == envelope.FormCommit {
			st.Commits = append(st.Commits, r.Data)
		}
	}
	return st
}

// envelopes returns the raw envelopes stored, by (time, id).
func (s *memStore) envelopes() [][]byte {
	rs := make([]Record, 0, len(s.envs))
	for _, r := range s.envs {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b Record) int {
		if a.Time != b.Time {
			if a.Time < b.Time {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
	out := make([][]byte, len(rs))
	for i, r := range rs {
		out[i] = r.Data
	}
	return out
}

// hdev is one device in the harness.
type hdev struct {
	t     testing.TB
	name  string
	dev   *identity.Device
	team  *Team
	store *memStore
	cfg   Config
	// published collects what it gossiped.
	published [][]byte
	// banned and synced collect the peers its effects named.
	banned, synced []Peer
}

func (d *hdev) peer() Peer { return Peer{ID: d.name, Device: d.dev.ID()} }

// apply makes effects durable and records the rest.
func (d *hdev) apply(eff Effects) {
	d.store.write(eff.Write)
	d.published = append(d.published, eff.Publish...)
	d.banned = append(d.banned, eff.Ban...)
	d.synced = append(d.synced, eff.Sync...)
}

// restart drops the Team and restores it from the store.
func (d *hdev) restart(now time.Time) {
	d.t.Helper()
	cfg := d.cfg
	cfg.Genesis = d.team.Genesis()
	tm, err := New(cfg, now, d.store.stored())
	if err != nil {
		d.t.Fatalf("%s: restore: %v", d.name, err)
	}
	d.team = tm
}

// harness is a set of devices sharing a team and a virtual clock.
type harness struct {
	t    testing.TB
	now  time.Time
	r    io.Reader
	devs map[string]*hdev
	team crdt.TeamID
}

func newHarness(t testing.TB, seed uint64) *harness {
	h := &harness{t: t, now: t0, r: detRand(seed), devs: make(map[string]*hdev)}
	if _, err := io.ReadFull(h.r, h.team[:]); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) tick(d time.Duration) time.Time {
	h.now = h.now.Add(d)
	return h.now
}

// device makes a device (not in the team yet).
func (h *harness) device(name string) *hdev {
	h.t.Helper()
	dev, err := identity.Generate(h.r)
	if err != nil {
		h.t.Fatal(err)
	}
	d := &hdev{t: h.t, name: name, dev: dev, store: newMemStore(),
		cfg: Config{Device: dev, Team: h.team, Rand: h.r, AckInterval: -1}}
	h.devs[name] = d
	return d
}

// create makes the team with d as its creator.
func (h *harness) create(name string) *hdev {
	h.t.Helper()
	d := h.device(name)
	tm, eff, err := Create(d.cfg, h.tick(time.Second), "Ward 3", crdt.Clinical, name)
	if err != nil {
		h.t.Fatal(err)
	}
	d.team = tm
	d.apply(eff)
	return d
}

// join adds a new device as a person (admin says so) through inviter, as
// the join protocol does: a commit by the inviter, then Join from its
// history.
func (h *harness) join(inviter *hdev, name string, admin bool) *hdev {
	h.t.Helper()
	d := h.device(name)
	info := crdt.MemberInfo{Device: d.dev.ID(), Noise: d.dev.NoisePublic(), Name: name, Admin: admin}
	h.joinAs(inviter, d, crdt.Change{Action: crdt.ActAdd, Info: info})
	return d
}

// link adds a new device of the person inviter belongs to.
func (h *harness) link(inviter *hdev, name string) *hdev {
	h.t.Helper()
	d := h.device(name)
	p, ok := inviter.team.State().PersonOf(inviter.dev.ID())
	if !ok {
		h.t.Fatalf("%s is not a member", inviter.name)
	}
	info := crdt.MemberInfo{Device: d.dev.ID(), Noise: d.dev.NoisePublic(), Name: name}
	h.joinAs(inviter, d, crdt.Change{Action: crdt.ActLink, Info: info, Target: p.ID})
	return d
}

func (h *harness) joinAs(inviter, d *hdev, ch crdt.Change) {
	h.t.Helper()
	// The join request's prekey, as node/join carries it: the commit boxes the new device's key to it.
	pk, err := epochkey.NewPrekey(h.r)
	if err != nil {
		h.t.Fatal(err)
	}
	_, eff, err := inviter.team.ChangeFor(h.tick(time.Second), map[identity.DeviceID]identity.NoisePublic{d.dev.ID(): pk.Public}, ch)
	if err != nil {
		h.t.Fatalf("%s adds %s: %v", inviter.name, d.name, err)
	}
	inviter.apply(eff)
	hist := inviter.team.History(func(id crdt.OpID) []byte { return inviter.store.envs[id].Data })
	cfg := d.cfg
	cfg.Genesis = inviter.team.Genesis()
	cfg.JoinPrekey = &pk
	tm, jeff, err := Join(cfg, h.tick(time.Second), hist)
	if err != nil {
		h.t.Fatalf("%s joins: %v", d.name, err)
	}
	cfg.JoinPrekey = nil
	d.cfg = cfg
	d.team = tm
	d.apply(jeff)
}

// deliver gives to the device what from stores (as a reconciliation
// would), and returns the verdicts.
func (h *harness) sync(from, to *hdev) []Verdict {
	h.t.Helper()
	var arr []Arrival
	for _, raw := range from.store.envelopes() {
		arr = append(arr, Arrival{Raw: raw, From: from.peer()})
	}
	v, eff := to.team.Receive(h.tick(time.Millisecond), arr)
	to.apply(eff)
	return v
}

// gossip delivers raw envelopes to to, from from.
func (h *harness) gossip(from, to *hdev, raws ...[]byte) []Verdict {
	h.t.Helper()
	var arr []Arrival
	for _, raw := range raws {
		arr = append(arr, Arrival{Raw: raw, From: from.peer()})
	}
	v, eff := to.team.Receive(h.tick(time.Millisecond), arr)
	to.apply(eff)
	return v
}

// mesh syncs every pair of the given devices until nothing moves.
func (h *harness) mesh(ds ...*hdev) {
	h.t.Helper()
	for range 6 {
		for _, a := range ds {
			for _, b := range ds {
				if a != b {
					h.sync(a, b)
				}
			}
		}
	}
}

// send has d send a message, applied; it returns the op.
func (h *harness) send(d *hdev, text string) *crdt.Op {
	h.t.Helper()
	op, eff, err := d.team.Send(h.tick(time.Second), crdt.Message{Text: text})
	if err != nil {
		h.t.Fatalf("%s sends %q: %v", d.name, text, err)
	}
	d.apply(eff)
	return op
}

// texts returns the texts d shows, in order.
func texts(d *hdev) []string {
	var out []string
	for _, m := range d.team.State().Messages {
		out = append(out, m.Text)
	}
	return out
}

// members returns the names of d's current persons, sorted.
func members(d *hdev) []string {
	var out []string
	for _, p := range d.team.State().Persons {
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

func (h *harness) String() string { return fmt.Sprintf("harness at %s", h.now.Format(time.TimeOnly)) }
