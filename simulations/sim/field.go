package sim

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Field is the field model: districts of villages, each district with its
// teams of community health workers (CHWs), a supervisor who belongs to
// every team of the district, and a clinic relay enrolled for them.
//
// A CHW lives in one of its team's villages. Each day it leaves home in
// the morning, walks to another village of its team (or, with MarketProb,
// to a village of another team of the district), stays there, and walks
// home. Devices in the same village at the same time are in contact. The
// clinic relay is reachable from the district's first ClinicVillages
// villages (a CHW there reaches it), and is down during RelayDown. The
// supervisor lives at the first clinic village and, once a week, spends a
// day with each team in turn at its first village, where the team's CHWs
// meet that day instead of their usual visit.
type Field struct {
	Districts         int      `toml:"districts"`
	TeamsPerDistrict  int      `toml:"teams_per_district"`
	CHWsPerTeam       int      `toml:"chws_per_team"`
	VillagesPerTeam   int      `toml:"villages_per_team"`
	ClinicVillages    int      `toml:"clinic_villages"`
	Leave             Duration `toml:"leave"` // time of day CHWs leave home
	Walk              Duration `toml:"walk"`
	Stay              Duration `toml:"stay"`
	Jitter            Duration `toml:"jitter"`
	MarketProb        float64  `toml:"market_prob"`
	RelayBackhaul     bool     `toml:"relay_backhaul"` // relays of all districts reach each other
	RelayDownFrom     Duration `toml:"relay_down_from"`
	RelayDownUntil    Duration `toml:"relay_down_until"`
	SupervisorVisitAt Duration `toml:"supervisor_visit_at"` // time of day of the weekly team meeting
}

// fieldWorld is the devices and teams a Field makes.
type fieldWorld struct {
	devices []DeviceSpec
	teams   []TeamSpec
	home    []int // each CHW's home village (-1: not a CHW)
	// villages[t] are team t's villages (global village numbers).
	villages [][]int
	district []int // each village's district
	clinic   []bool
	relayOf  []int // each district's relay device
	superOf  []int // each district's supervisor device
	teamDist []int
	chws     [][]int // each team's CHWs
}

func (f *Field) check() error {
	if f.Districts < 1 || f.TeamsPerDistrict < 1 || f.CHWsPerTeam < 1 || f.VillagesPerTeam < 1 {
		return fmt.Errorf("field: districts, teams_per_district, chws_per_team and villages_per_team must be at least 1")
	}
	if f.Districts*f.TeamsPerDistrict*(f.CHWsPerTeam+2) > 1<<20 {
		return fmt.Errorf("field: too many devices")
	}
	if f.Walk.D() <= 0 || f.Stay.D() <= 0 || f.Leave.D() < 0 || f.Leave.D()+2*f.Walk.D()+f.Stay.D()+2*f.Jitter.D() >= 24*time.Hour {
		return fmt.Errorf("field: leave, walk, stay and jitter must fit in a day")
	}
	return nil
}

func (f *Field) world() *fieldWorld {
	w := &fieldWorld{}
	v := 0
	for d := range f.Districts {
		relay := len(w.devices)
		w.devices = append(w.devices, DeviceSpec{Name: fmt.Sprintf("relay-d%d", d), Relay: true})
		super := len(w.devices)
		w.devices = append(w.devices, DeviceSpec{Name: fmt.Sprintf("supervisor-d%d", d)})
		w.home = append(w.home, -1, -1)
		w.relayOf = append(w.relayOf, relay)
		w.superOf = append(w.superOf, super)
		first := v
		for t := range f.TeamsPerDistrict {
			var vs []int
			for range f.VillagesPerTeam {
				w.district = append(w.district, d)
				w.clinic = append(w.clinic, v-first < f.ClinicVillages)
				vs = append(vs, v)
				v++
			}
			ti := len(w.teams)
			w.villages = append(w.villages, vs)
			w.teamDist = append(w.teamDist, d)
			ts := TeamSpec{Name: fmt.Sprintf("d%dt%d", d, t), Members: []int{super}, Relays: []int{relay}}
			var chws []int
			for c := range f.CHWsPerTeam {
				id := len(w.devices)
				w.devices = append(w.devices, DeviceSpec{Name: fmt.Sprintf("chw-d%dt%dc%d", d, t, c)})
				w.home = append(w.home, vs[c%len(vs)])
				ts.Members = append(ts.Members, id)
				chws = append(chws, id)
			}
			w.teams = append(w.teams, ts)
			w.chws = append(w.chws, chws)
			_ = ti
		}
	}
	return w
}

type presence struct {
	dev        int
	from, till time.Duration
}

// contacts generates the model's contacts over horizon.
func (f *Field) contacts(w *fieldWorld, horizon time.Duration, rng *rand.Rand) []ContactEvent {
	nv := len(w.district)
	at := make([][]presence, nv)
	days := int(horizon/(24*time.Hour)) + 1
	jit := func() time.Duration {
		if f.Jitter.D() <= 0 {
			return 0
		}
		return time.Duration(rng.Int64N(int64(f.Jitter.D())))
	}
	for ti, chws := range w.chws {
		d := w.teamDist[ti]
		vs := w.villages[ti]
		for _, c := range chws {
			home := w.home[c]
			last := time.Duration(0)
			for day := range days {
				base := time.Duration(day) * 24 * time.Hour
				leave := base + f.Leave.D() + jit()
				target := vs[rng.IntN(len(vs))]
				meeting := f.TeamsPerDistrict > 0 && day%7 == (ti%f.TeamsPerDistrict)%7 && f.TeamsPerDistrict <= 7
				if meeting {
					target = vs[0]
					leave = base + f.SupervisorVisitAt.D() - f.Walk.D()
				} else if rng.Float64() < f.MarketProb && f.TeamsPerDistrict > 1 {
					other := (ti - ti%f.TeamsPerDistrict) + rng.IntN(f.TeamsPerDistrict)
					target = w.villages[other][rng.IntN(len(w.villages[other]))]
				}
				if target == home {
					continue
				}
				arrive := leave + f.Walk.D()
				depart := arrive + f.Stay.D()
				at[home] = append(at[home], presence{c, last, leave})
				at[target] = append(at[target], presence{c, arrive, depart})
				last = depart + f.Walk.D()
			}
			at[home] = append(at[home], presence{c, last, horizon})
		}
		_ = d
	}
	// Supervisors: at home (the district's first village) but for the
	// weekly meeting days.
	for d, s := range w.superOf {
		home := d * f.TeamsPerDistrict * f.VillagesPerTeam
		last := time.Duration(0)
		for day := range days {
			t := day % 7
			if t >= f.TeamsPerDistrict {
				continue
			}
			ti := d*f.TeamsPerDistrict + t
			target := w.villages[ti][0]
			base := time.Duration(day) * 24 * time.Hour
			leave := base + f.SupervisorVisitAt.D() - f.Walk.D()
			arrive := leave + f.Walk.D()
			depart := arrive + f.Stay.D()
			if target != home {
				at[home] = append(at[home], presence{s, last, leave})
				at[target] = append(at[target], presence{s, arrive, depart})
				last = depart + f.Walk.D()
			}
		}
		at[home] = append(at[home], presence{s, last, horizon})
	}
	// Relays: reachable from their clinic villages, but for the outage.
	for v := range nv {
		if !w.clinic[v] {
			continue
		}
		r := w.relayOf[w.district[v]]
		if f.RelayDownUntil.D() > f.RelayDownFrom.D() {
			at[v] = append(at[v], presence{r, 0, f.RelayDownFrom.D()}, presence{r, f.RelayDownUntil.D(), horizon})
		} else {
			at[v] = append(at[v], presence{r, 0, horizon})
		}
	}
	var evs []ContactEvent
	for v := range nv {
		evs = append(evs, colocate(at[v], horizon)...)
	}
	if f.RelayBackhaul {
		for i, a := range w.relayOf {
			for _, b := range w.relayOf[i+1:] {
				evs = append(evs, ContactEvent{At: 0, A: a, B: b, Up: true})
			}
		}
	}
	slices.SortStableFunc(evs, func(x, y ContactEvent) int { return cmp.Compare(x.At, y.At) })
	return evs
}

// colocate turns presence intervals at one place into contacts: each pair
// present at once is in contact for the overlap.
func colocate(ps []presence, horizon time.Duration) []ContactEvent {
	type edge struct {
		at  time.Duration
		in  bool
		dev int
	}
	var es []edge
	for _, p := range ps {
		if p.till <= p.from {
			continue
		}
		es = append(es, edge{p.from, true, p.dev}, edge{min(p.till, horizon), false, p.dev})
	}
	slices.SortStableFunc(es, func(a, b edge) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		// Leave before arriving at the same instant.
		if a.in != b.in {
			if !a.in {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.dev, b.dev)
	})
	present := map[int]int{}
	var order []int
	var evs []ContactEvent
	for _, e := range es {
		if e.in {
			if present[e.dev] == 0 {
				for _, o := range order {
					evs = append(evs, ContactEvent{At: e.at, A: e.dev, B: o, Up: true})
				}
				order = append(order, e.dev)
			}
			present[e.dev]++
		} else {
			present[e.dev]--
			if present[e.dev] == 0 {
				delete(present, e.dev)
				order = slices.DeleteFunc(order, func(x int) bool { return x == e.dev })
				for _, o := range order {
					evs = append(evs, ContactEvent{At: e.at, A: e.dev, B: o})
				}
			}
		}
	}
	return evs
}

func slicesSortMessages(ms []MessageSpec) {
	slices.SortStableFunc(ms, func(a, b MessageSpec) int { return cmp.Compare(a.At, b.At) })
}
