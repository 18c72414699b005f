package device

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/recon"
)

// reconTeam returns a harness with a team of n devices (the first the
// creator, the rest joined through it), meshed by Reconcile.
func reconTeam(t *testing.T, seed uint64, n int) (*harness, []*hdev) {
	t.Helper()
	h := newHarness(t, seed)
	ds := []*hdev{h.create("d0")}
	for i := 1; i < n; i++ {
		ds = append(ds, h.join(ds[0], fmt.Sprintf("d%d", i), false))
	}
	reconcileAll(t, h, ds, ReconcileOptions{})
	return h, ds
}

// reconcileAll reconciles every device with the first, twice round.
func reconcileAll(t *testing.T, h *harness, ds []*hdev, opt ReconcileOptions) []ReconcileResult {
	t.Helper()
	var out []ReconcileResult
	for range 2 {
		for _, d := range ds[1:] {
			now := h.tick(time.Second)
			res, err := Reconcile(sideOf(d, now), sideOf(ds[0], now), opt)
			if err != nil {
				t.Fatalf("%s with %s: %v", d.name, ds[0].name, err)
			}
			out = append(out, res)
		}
	}
	return out
}

// sameStores reports whether the devices store the same envelopes.
func sameStores(ds []*hdev) bool {
	want, _ := storeSource{ds[0].store}.Items()
	for _, d := range ds[1:] {
		if got, _ := (storeSource{d.store}).Items(); !slices.Equal(got, want) {
			return false
		}
	}
	return true
}

func TestReconcile(t *testing.T) {
	h, ds := reconTeam(t, 11, 3)
	if !sameStores(ds) {
		t.Fatal("the team's devices store different envelopes after meshing")
	}
	h.send(ds[1], "from d1")
	h.send(ds[1], "again from d1")
	h.send(ds[2], "from d2")
	now := h.tick(time.Second)
	res, err := Reconcile(sideOf(ds[1], now), sideOf(ds[2], now), ReconcileOptions{Rand: detRand(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Initiator.Verdicts[Accepted]; got != 1 {
		t.Errorf("initiator accepted %d envelopes; want 1", got)
	}
	if got := res.Responder.Verdicts[Accepted]; got != 2 {
		t.Errorf("responder accepted %d envelopes; want 2", got)
	}
	if !res.Initiator.Effects.Changed || !res.Responder.Effects.Changed {
		t.Errorf("Changed not reported: %v, %v", res.Initiator.Effects.Changed, res.Responder.Effects.Changed)
	}
	if got, want := res.Initiator.Session.EnvelopesReceived, uint64(1); got != want {
		t.Errorf("initiator's session received %d envelopes; want %d", got, want)
	}
	if res.Frames == 0 || res.Bytes == 0 || uint64(res.Bytes) != res.Initiator.Session.BytesSent+res.Responder.Session.BytesSent {
		t.Errorf("frames %d, bytes %d; sessions sent %d + %d bytes", res.Frames, res.Bytes, res.Initiator.Session.BytesSent, res.Responder.Session.BytesSent)
	}
	if got, want := texts(ds[2]), texts(ds[1]); !slices.Equal(got, want) || len(got) != 3 {
		t.Errorf("d2 shows %v; d1 %v", got, want)
	}
	// Nothing is missing: nothing moves.
	res, err = Reconcile(sideOf(ds[1], now), sideOf(ds[2], now), ReconcileOptions{})
	if err != nil || res.Initiator.Received+res.Responder.Received != 0 {
		t.Errorf("a second reconciliation moved %d and %d envelopes: %v", res.Initiator.Received, res.Responder.Received, err)
	}
}

// TestReconcileFaults: with envelopes lost, repeated and reordered on the
// way, and the smallest frames, repeated reconciliations converge.
func TestReconcileFaults(t *testing.T) {
	h, ds := reconTeam(t, 12, 4)
	for _, d := range ds {
		for i := range 3 {
			h.send(d, fmt.Sprintf("%s %d", d.name, i))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	f := LinkFaults{Rand: rng, Drop: 0.3, Duplicate: 0.3, Reorder: true}
	opt := ReconcileOptions{MaxFrame: recon.MinFrameSize, ToInitiator: f, ToResponder: f}
	var dropped, dup int
	for round := 0; !sameStores(ds); round++ {
		if round > 50 {
			t.Fatalf("no convergence after 50 rounds")
		}
		for _, res := range reconcileAll(t, h, ds, opt) {
			dropped += res.Initiator.Dropped + res.Responder.Dropped
			dup += res.Initiator.Duplicated + res.Responder.Duplicated
			for _, s := range []SideStats{res.Initiator, res.Responder} {
				if s.Verdicts[Rejected] != 0 || len(s.Effects.Ban) != 0 {
					t.Errorf("honest peers: %d envelopes rejected, bans %v", s.Verdicts[Rejected], s.Effects.Ban)
				}
			}
		}
	}
	if dropped == 0 || dup == 0 {
		t.Errorf("faults not injected: %d dropped, %d duplicated", dropped, dup)
	}
	want := texts(ds[0])
	if len(want) != 12 {
		t.Errorf("d0 shows %d messages; want 12", len(want))
	}
	for _, d := range ds[1:] {
		if got := texts(d); !slices.Equal(got, want) {
			t.Errorf("%s shows %v; d0 %v", d.name, got, want)
		}
	}
}

// TestReconcileDeterministic: with the same salt, the same exchange.
func TestReconcileDeterministic(t *testing.T) {
	var runs [2]ReconcileResult
	for i := range runs {
		h, ds := reconTeam(t, 13, 2)
		h.send(ds[0], "one")
		h.send(ds[1], "two")
		now := h.tick(time.Second)
		res, err := Reconcile(sideOf(ds[0], now), sideOf(ds[1], now), ReconcileOptions{Rand: detRand(7)})
		if err != nil {
			t.Fatal(err)
		}
		res.Initiator.Effects, res.Responder.Effects = Effects{}, Effects{}
		runs[i] = res
	}
	if !reflect.DeepEqual(runs[0], runs[1]) {
		t.Errorf("two runs from one seed differ:\n%+v\n%+v", runs[0], runs[1])
	}
}

// TestReconcileErrors checks the failure paths: an incomplete side, frames
// mangled on the way, a peer that sends garbage until it is banned, an
// Apply that fails, and an exchange cut short.
func TestReconcileErrors(t *testing.T) {
	h, ds := reconTeam(t, 14, 2)
	a, b := ds[0], ds[1]
	h.send(a, "from a")
	now := h.tick(time.Second)

	t.Run("config", func(t *testing.T) {
		for _, s := range []Side{{}, {Team: a.team}, {Team: a.team, Store: storeSource{a.store}}} {
			if _, err := Reconcile(s, sideOf(b, now), ReconcileOptions{}); !errors.Is(err, ErrConfig) {
				t.Errorf("side %+v: got %v; want ErrConfig", s, err)
			}
		}
	})

	t.Run("mangled frames", func(t *testing.T) {
		before, beforeLen := b.team.State(), len(b.store.envs)
		versions, mangled := 0, 0
		for seed := range uint64(20) {
			f := LinkFaults{Rand: rand.New(rand.NewPCG(seed, 3)), Mangle: 1}
			res, err := Reconcile(sideOf(b, now), sideOf(a, now), ReconcileOptions{ToInitiator: f})
			mangled += res.Initiator.Mangled
			switch {
			case errors.Is(err, recon.ErrVersion):
				versions++
			case err == nil:
				t.Errorf("seed %d: every frame to the initiator mangled, and no error", seed)
			}
			if res.Responder.Mangled != 0 {
				t.Errorf("frames to the responder mangled")
			}
		}
		if versions == 0 || mangled == 0 {
			t.Errorf("%d frames mangled, %d runs failed on the version", mangled, versions)
		}
		if !reflect.DeepEqual(b.team.State(), before) || len(b.store.envs) != beforeLen {
			t.Errorf("mangled frames changed the state or the store")
		}
	})

	t.Run("garbage until banned", func(t *testing.T) {
		var src listSource
		for i := range 2 * maxFaults {
			id := crdt.OpID{0xee, byte(i)}
			src.add(uint64(i), id, []byte("not an envelope"))
		}
		bad := sideOf(a, now)
		bad.Store = &src
		before := b.team.State()
		res, err := Reconcile(sideOf(b, now), bad, ReconcileOptions{})
		if !errors.Is(err, ErrPeerBanned) {
			t.Errorf("garbage: got %v; want ErrPeerBanned", err)
		}
		if got := res.Initiator.Verdicts[Rejected]; got <= maxFaults {
			t.Errorf("%d envelopes rejected; want more than %d", got, maxFaults)
		}
		if ban := res.Initiator.Effects.Ban; len(ban) != 1 || ban[0].ID != a.name {
			t.Errorf("bans %v; want %s", ban, a.name)
		}
		if !reflect.DeepEqual(b.team.State(), before) || b.team.Has(crdt.OpID{0xee}) {
			t.Errorf("garbage changed the state or was stored")
		}
	})

	t.Run("apply fails", func(t *testing.T) {
		c := h.join(a, "c", false)
		broken := errors.New("disk full")
		side := sideOf(c, now)
		side.Apply = func(Effects) error { return broken }
		if _, err := Reconcile(side, sideOf(a, now), ReconcileOptions{}); !errors.Is(err, broken) {
			t.Errorf("a failing Apply: got %v; want its error", err)
		}
	})

	t.Run("stalled", func(t *testing.T) {
		d := h.join(a, "d", false)
		if _, err := Reconcile(sideOf(d, now), sideOf(a, now), ReconcileOptions{MaxFrames: 1}); !errors.Is(err, ErrReconcileStalled) {
			t.Errorf("one frame allowed: got %v; want ErrReconcileStalled", err)
		}
	})
}

// TestReconcileGarbage: each kind of garbage a member sends gets the
// verdict it should, changes nothing a device shows or stores, and only
// what no honest peer passes on counts against the sender.
func TestReconcileGarbage(t *testing.T) {
	// The verdicts each kind may get: the first is the one the package
	// documentation describes. Random or tampered bytes under an epoch the
	// receiver holds with its chains fail the sender's signature, which
	// covers every byte since format 7 (the outer layer has no Poly1305
	// tag): Rejected, as an honest peer of that epoch checks it. One kind
	// may differ:
	//   - an envelope sealed under the team's key by a device that is not a
	//     recipient names a slot of the epoch's recipient list (format
	//     version 6), whose device did not sign it: Rejected (an honest peer
	//     holding the outer key checks the signature), or Held by a receiver
	//     without the epoch's list.
	want := map[string][]Verdict{
		garbageBytes:      {Rejected},
		garbageCiphertext: {Rejected},
		garbageTampered:   {Rejected},
		garbageSignature:  {Rejected},
		garbageTopic:      {Held},
		garbageBody:       {Refused},
		garbageOutsider:   {Rejected, Held},
		garbageEpoch:      {Held},
		garbageParents:    {Held},
	}
	for i, kind := range garbageKinds {
		t.Run(kind, func(t *testing.T) {
			h, ds := reconTeam(t, 20+uint64(i), 3)
			g, victim := ds[1], ds[2]
			h.send(g, "an honest message first")
			h.send(victim, "and one of the victim")
			reconcileAll(t, h, ds, ReconcileOptions{})
			outsider, err := identity.Generate(h.r)
			if err != nil {
				t.Fatal(err)
			}
			m := &garbageMaker{g: g.team, store: g.store, outsider: outsider, rng: rand.New(rand.NewPCG(uint64(i), 9))}
			at, id, raw, ok := m.make(kind, victim.team, h.now)
			if !ok {
				t.Fatalf("no %s made", kind)
			}
			var src listSource
			src.add(at, id, raw)
			bad := sideOf(g, h.tick(time.Second))
			bad.Store = &src
			before, beforeLen := victim.team.State(), len(victim.store.envs)
			res, err := Reconcile(bad, sideOf(victim, h.now), ReconcileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := res.Responder.Verdicts
			verdict := want[kind][0]
			for _, v := range want[kind] {
				if got[v] == 1 {
					verdict = v
				}
			}
			if got[verdict] != 1 || len(got) != 1 {
				t.Errorf("verdicts %v; want one of %v", got, want[kind])
			}
			if !reflect.DeepEqual(victim.team.State(), before) || len(victim.store.envs) != beforeLen {
				t.Errorf("the garbage changed the victim's state or store")
			}
			if got, wantRejected := victim.team.PeerStats(g.name).Rejected, verdict == Rejected; (got == 1) != wantRejected {
				t.Errorf("rejected from the sender: %d", got)
			}
			// The sender's next honest message reaches the victim.
			op := h.send(g, "an honest message after")
			reconcileAll(t, h, ds, ReconcileOptions{})
			if !victim.team.Has(op.ID()) || !slices.Contains(texts(victim), "an honest message after") {
				t.Errorf("the sender's message after the garbage does not show: %v", texts(victim))
			}
			if slices.ContainsFunc(texts(victim), func(s string) bool { return bytes.Contains([]byte(s), []byte("garbage")) }) {
				t.Errorf("garbage shows: %v", texts(victim))
			}
		})
	}
}
