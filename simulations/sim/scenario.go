package sim

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Duration is a TOML duration: Go's form ("90m", "1h30m") or a number of
// days ("7d").
type Duration time.Duration

// D returns it as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText parses "7d", "1.5d" or a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		f, err := strconv.ParseFloat(days, 64)
		if err != nil || f < 0 || f > 36500 {
			return fmt.Errorf("bad duration %q", s)
		}
		*d = Duration(f * float64(24*time.Hour))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("bad duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Scenario is a simulation scenario, read from a self-documenting TOML
// file (simulations/scenarios).
type Scenario struct {
	Name        string   `toml:"name"`
	Description string   `toml:"description"`
	Duration    Duration `toml:"duration"`
	Seed        uint64   `toml:"seed"`
	// Strategies are compared by `fieldmesh sim compare`; the first is
	// what `sim run` runs.
	Strategies []string `toml:"strategies"`
	Copies     int      `toml:"copies"` // spray-and-wait's L
	Buffer     int      `toml:"buffer"` // bytes of other teams' envelopes a device carries (0: unlimited)
	Tick       Duration `toml:"tick"`
	Acks       bool     `toml:"acks"`
	MaxFrame   int      `toml:"max_frame"`
	Link       struct {
		Bandwidth float64  `toml:"bandwidth"` // bytes per second each way; 0: unlimited
		Latency   Duration `toml:"latency"`
		// Exclusive and Step give devices the ONE's radios (Link.Exclusive,
		// Link.Step: one transfer at a time, a message an update).
		Exclusive bool     `toml:"exclusive"`
		Step      Duration `toml:"step"`
	} `toml:"link"`
	Contacts struct {
		// Model is "one" (a trace file), "exponential" or "field".
		Model string `toml:"model"`
		Trace string `toml:"trace"` // relative to the scenario file
		// exponential
		Devices     int      `toml:"devices"`
		RatePerHour float64  `toml:"rate_per_hour"` // meetings per pair
		Contact     Duration `toml:"contact"`       // how long a meeting lasts
	} `toml:"contacts"`
	Field    Field    `toml:"field"`
	Workload Workload `toml:"workload"`

	dir string
}

// Workload is the messages a scenario's devices send.
type Workload struct {
	// TeamPerDay and DirectPerDay are each member's team and direct
	// messages a day (Poisson).
	TeamPerDay   float64 `toml:"team_per_day"`
	DirectPerDay float64 `toml:"direct_per_day"`
	// Sizes are text bytes, uniform in [Size, SizeMax].
	Size    int `toml:"size"`
	SizeMax int `toml:"size_max"`
	// Urgent and Emergency are the shares of those priorities.
	Urgent    float64  `toml:"urgent"`
	Emergency float64  `toml:"emergency"`
	TTL       Duration `toml:"ttl"`
	// Until stops new messages this long before the end, so late ones
	// have time to arrive.
	StopBefore Duration `toml:"stop_before"`
	// TraceMessages uses a ONE trace's C events as direct messages, all
	// devices in one team.
	TraceMessages bool `toml:"trace_messages"`
	// TracePairs uses a ONE trace's C events as messages too, each pair of
	// devices that exchanges messages a team of two (a direct
	// conversation), as TestAgainstTheONE replays the ONE's runs; other
	// devices belong to no team.
	TracePairs bool `toml:"trace_pairs"`
	// OneTeam puts every device of an exponential or trace scenario in one
	// team (else each message's pair... is still one team).
	Teams int `toml:"teams"`
}

// maxScenario is the largest scenario file read.
const maxScenario = 1 << 20

// LoadScenario reads a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > maxScenario {
		return nil, fmt.Errorf("scenario %s: larger than %d bytes", path, maxScenario)
	}
	s, err := ParseScenario(b)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	s.dir = filepath.Dir(path)
	return s, nil
}

// ParseScenario parses a scenario's TOML and checks it.
func ParseScenario(b []byte) (*Scenario, error) {
	var s Scenario
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&s)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("unknown setting %q", und[0].String())
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Scenario) check() error {
	if s.Duration.D() <= 0 || s.Duration.D() > 400*24*time.Hour {
		return errors.New("duration must be between 0 and 400 days")
	}
	if s.Copies < 0 || s.Buffer < 0 || s.MaxFrame < 0 || s.Link.Bandwidth < 0 || s.Link.Step < 0 {
		return errors.New("copies, buffer, max_frame, bandwidth and step must not be negative")
	}
	if s.Copies > MaxCopies {
		return fmt.Errorf("copies must be at most %d", MaxCopies)
	}
	if s.Link.Step > 0 && !s.Link.Exclusive {
		return errors.New("link: step holds radios only when they are exclusive")
	}
	if s.Contacts.Model != "one" && (s.Workload.TraceMessages || s.Workload.TracePairs) {
		return errors.New("workload: trace_messages and trace_pairs need contacts from a trace (model one)")
	}
	for _, n := range s.Strategies {
		if _, ok := Strategies(1, 0)[n]; !ok {
			return fmt.Errorf("unknown strategy %q (known: %s)", n, strings.Join(StrategyNames, ", "))
		}
	}
	w := s.Workload
	if w.TeamPerDay < 0 || w.DirectPerDay < 0 || w.Size < 0 || w.SizeMax > crdt.MaxTextLen || w.Urgent < 0 || w.Emergency < 0 || w.Urgent+w.Emergency > 1 {
		return errors.New("workload: rates, sizes (at most 16 KiB) and shares must be valid")
	}
	switch s.Contacts.Model {
	case "one":
		if s.Contacts.Trace == "" {
			return errors.New("contacts: model one needs a trace")
		}
		if w.TraceMessages && w.TracePairs {
			return errors.New("workload: trace_messages and trace_pairs exclude each other")
		}
	case "exponential":
		if s.Contacts.Devices < 2 || s.Contacts.Devices > 100000 || s.Contacts.RatePerHour <= 0 {
			return errors.New("contacts: exponential needs devices (2..100000) and rate_per_hour")
		}
	case "field":
		return s.Field.check()
	default:
		return fmt.Errorf("contacts: unknown model %q (one, exponential or field)", s.Contacts.Model)
	}
	return nil
}

// StrategyByName returns the scenario's strategy of that name.
func (s *Scenario) StrategyByName(name string) (Strategy, error) {
	copies := s.Copies
	if copies == 0 {
		copies = 4
	}
	st, ok := Strategies(copies, s.Buffer)[name]
	if !ok {
		return Strategy{}, fmt.Errorf("unknown strategy %q (known: %s)", name, strings.Join(StrategyNames, ", "))
	}
	return st, nil
}

// Build makes the run's configuration for a seed and a strategy: the same
// seed gives the same devices, contacts and messages whatever the strategy.
func (s *Scenario) Build(seed uint64, strategy string) (Config, error) {
	st, err := s.StrategyByName(strategy)
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Seed: seed, Strategy: st, Duration: s.Duration.D(), TickEvery: s.Tick.D(), Acks: s.Acks, MaxFrame: s.MaxFrame,
		Link: Link{Bandwidth: s.Link.Bandwidth, Latency: s.Link.Latency.D(), Exclusive: s.Link.Exclusive, Step: s.Link.Step.D()}}
	rng := rand.New(rand.NewPCG(seed, 0x5ce7a210))
	switch s.Contacts.Model {
	case "one":
		path := s.Contacts.Trace
		if !filepath.IsAbs(path) {
			path = filepath.Join(s.dir, path)
		}
		f, err := os.Open(path)
		if err != nil {
			return cfg, err
		}
		defer f.Close()
		tr, err := ReadONE(f)
		if err != nil {
			return cfg, err
		}
		cfg.Contacts = tr.Contacts
		if s.Workload.TracePairs {
			if err := tracePairs(&cfg, tr, s.Workload.TTL.D()); err != nil {
				return cfg, err
			}
			break
		}
		s.flat(&cfg, tr.N)
		if s.Workload.TraceMessages {
			for _, m := range tr.Messages {
				cfg.Messages = append(cfg.Messages, m.spec(0, s.Workload.TTL.D()))
			}
		} else {
			cfg.Messages = s.Workload.generate(cfg.Teams, s.Duration.D(), rng)
		}
	case "exponential":
		n := s.Contacts.Devices
		s.flat(&cfg, n)
		dur := s.Contacts.Contact.D()
		if dur <= 0 {
			dur = time.Minute
		}
		cfg.Contacts = Exponential(n, s.Contacts.RatePerHour/3600, dur, s.Duration.D(), rng)
		cfg.Messages = s.Workload.generate(cfg.Teams, s.Duration.D(), rng)
	case "field":
		w := s.Field.world()
		cfg.Devices, cfg.Teams = w.devices, w.teams
		cfg.Contacts = s.Field.contacts(w, s.Duration.D(), rng)
		cfg.Messages = s.Workload.generate(cfg.Teams, s.Duration.D(), rng)
	}
	return cfg, nil
}

// maxPairTeams is the most teams a trace_pairs scenario makes: each is a
// device core per member, with its keys.
const maxPairTeams = 1 << 16

// tracePairs makes tr's devices, each pair of them that exchanges
// messages a team of two, and tr's messages in them. A trace of more than
// maxPairTeams pairs is refused.
func tracePairs(cfg *Config, tr *Trace, ttl time.Duration) error {
	pairs := map[[2]int]int{}
	for _, m := range tr.Messages {
		k := pairKey(m.From, m.To)
		ti, ok := pairs[k]
		if !ok {
			if len(cfg.Teams) == maxPairTeams {
				return fmt.Errorf("%w: messages between more than %d pairs of devices", ErrTrace, maxPairTeams)
			}
			ti = len(cfg.Teams)
			pairs[k] = ti
			cfg.Teams = append(cfg.Teams, TeamSpec{Members: []int{k[0], k[1]}})
		}
		cfg.Messages = append(cfg.Messages, m.spec(ti, ttl))
	}
	for i := range tr.N {
		cfg.Devices = append(cfg.Devices, DeviceSpec{Name: "n" + strconv.Itoa(i)})
	}
	return nil
}

// spec is trace message m as a message to team ti: its text is what is
// left of its size after sealing.
func (m TraceMessage) spec(ti int, ttl time.Duration) MessageSpec {
	return MessageSpec{At: m.At, Team: ti, From: m.From, To: m.To,
		Size: min(max(m.Size-envelopeOverhead, 1), crdt.MaxTextLen), TTL: ttl}
}

// envelopeOverhead is about what sealing adds to a message's text: a
// trace's message size is the envelope's.
const envelopeOverhead = 231

// flat makes n plain devices in Workload.Teams teams (1 if unset), split
// evenly.
func (s *Scenario) flat(cfg *Config, n int) {
	k := max(1, s.Workload.Teams)
	cfg.Teams = make([]TeamSpec, k)
	for i := range n {
		cfg.Devices = append(cfg.Devices, DeviceSpec{Name: fmt.Sprintf("n%d", i)})
		cfg.Teams[i%k].Members = append(cfg.Teams[i%k].Members, i)
	}
}

// generate makes Poisson team and direct messages from every member of
// every team.
func (w Workload) generate(teams []TeamSpec, horizon time.Duration, rng *rand.Rand) []MessageSpec {
	var out []MessageSpec
	end := horizon - w.StopBefore.D()
	day := float64(24 * time.Hour)
	for ti, t := range teams {
		for _, from := range t.Members {
			for _, direct := range []bool{false, true} {
				rate := w.TeamPerDay
				if direct {
					rate = w.DirectPerDay
				}
				if rate <= 0 || (direct && len(t.Members) < 2) {
					continue
				}
				at := 0.0
				for {
					at += rng.ExpFloat64() / rate * day
					if time.Duration(at) > end {
						break
					}
					m := MessageSpec{At: time.Duration(at), Team: ti, From: from, To: -1, Size: w.Size, TTL: w.TTL.D()}
					if w.SizeMax > w.Size {
						m.Size = w.Size + rng.IntN(w.SizeMax-w.Size+1)
					}
					switch p := rng.Float64(); {
					case p < w.Emergency:
						m.Priority = crdt.Emergency
					case p < w.Emergency+w.Urgent:
						m.Priority = crdt.Urgent
					}
					if direct {
						for m.To < 0 || m.To == from {
							m.To = t.Members[rng.IntN(len(t.Members))]
						}
					}
					out = append(out, m)
				}
			}
		}
	}
	slicesSortMessages(out)
	return out
}
