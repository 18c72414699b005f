package usage

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Bytes is a pair of byte counts and their sum.
type Bytes struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Total    uint64 `json:"total"`
}

func bytesOf(c storage.UsageCount) Bytes {
	return Bytes{Sent: c.Sent, Received: c.Received, Total: c.Total()}
}

// Day is one day of a report.
type Day struct {
	Date string `json:"date"` // YYYY-MM-DD
	Bytes
}

// Team is the traffic of one team in a report (a subset of the total).
type Team struct {
	// ID is the team's id, or "" for a team this device no longer belongs to.
	ID string `json:"id"`
	// Topic is the short form of the team's gossip topic (what the store keeps).
	Topic string `json:"topic"`
	// Name is the team's name, resolved when the report was made; "" when ID is.
	Name   string `json:"name"`
	Gossip Bytes  `json:"gossip"`
	Sync   Bytes  `json:"sync"`
	Bytes
}

// Protocol is the traffic of one protocol in a report.
type Protocol struct {
	Protocol string `json:"protocol"`
	Bytes
}

// Peer is the traffic with one peer in a report.
type Peer struct {
	// Device is the short id of the peer's device, "?" when it is not known, or "other" for the
	// peers not counted separately.
	Device string `json:"device"`
	PeerID string `json:"peer_id,omitempty"`
	Bytes
}

// Report is what this device sent and received over fieldmesh in one calendar month: the totals,
// and the same bytes by day, by protocol and by peer (the busiest 10, then the rest together), and
// the part of them that was a team's gossip or catch-up. Counts are stream payload bytes: a lower
// bound of the data a carrier bills (see the package doc).
type Report struct {
	Month string `json:"month"` // YYYY-MM
	Total Bytes  `json:"total"`
	// Unattributed is the part of Total that is no team's: discovery, keep-alives, protocol
	// negotiation, gossip control.
	Unattributed Bytes      `json:"unattributed"`
	Days         []Day      `json:"days"`
	Teams        []Team     `json:"teams"`
	Protocols    []Protocol `json:"protocols"`
	Peers        []Peer     `json:"peers"`
}

// Names resolves what the store keeps (topics, peer ids) to what a report shows. A nil field
// resolves nothing.
type Names struct {
	// Team returns the id and name of the team whose topic is t; ok is false for a team this device
	// does not belong to.
	Team func(t envelope.Topic) (id crdt.TeamID, name string, ok bool)
	// Device returns the device behind peer id p.
	Device func(p peer.ID) (identity.DeviceID, error)
}

// Report builds the report of month ("YYYY-MM"; "" is the current month, in the time zone of
// Config.Now) from the store and the counts not flushed yet. The report names teams: it is for the
// device's user, never for logs.
func (m *Meter) Report(month string, names Names) (Report, error) {
	var first time.Time
	if month == "" {
		now := m.now()
		first = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, now.Location())
	} else {
		t, err := time.Parse("2006-01", month)
		if err != nil {
			return Report{}, fmt.Errorf("usage: bad month %q (want YYYY-MM)", month)
		}
		first = t
	}
	from := dayOf(first)
	to := from + 30 // yyyymm31: later than the last day of any month, earlier than the next month
	rows := make(map[storage.UsageKey]storage.UsageCount)
	m.flushMu.Lock()
	err := m.st.Usage(from, to, func(k storage.UsageKey, c storage.UsageCount) error {
		rows[k] = rows[k].Add(c)
		return nil
	})
	m.mu.Lock()
	for k, c := range m.pending {
		if k.Day >= from && k.Day <= to {
			rows[k] = rows[k].Add(c)
		}
	}
	m.mu.Unlock()
	m.flushMu.Unlock()
	if err != nil {
		return Report{}, fmt.Errorf("usage: read data usage: %w", err)
	}

	var total, teamTotal storage.UsageCount
	days := make(map[uint32]storage.UsageCount)
	protos := make(map[string]storage.UsageCount)
	peers := make(map[string]storage.UsageCount)
	type teamSums struct{ gossip, sync storage.UsageCount }
	teams := make(map[envelope.Topic]*teamSums)
	for k, c := range rows {
		if k.Topic != (envelope.Topic{}) {
			ts := teams[k.Topic]
			if ts == nil {
				ts = &teamSums{}
				teams[k.Topic] = ts
			}
			if k.Protocol == labelSync {
				ts.sync = ts.sync.Add(c)
			} else {
				ts.gossip = ts.gossip.Add(c)
			}
			teamTotal = teamTotal.Add(c)
			continue
		}
		total = total.Add(c)
		days[k.Day] = days[k.Day].Add(c)
		protos[k.Protocol] = protos[k.Protocol].Add(c)
		peers[k.Peer] = peers[k.Peer].Add(c)
	}

	r := Report{
		Month: first.Format("2006-01"),
		Total: bytesOf(total),
		Unattributed: bytesOf(storage.UsageCount{
			Sent:     total.Sent - min(total.Sent, teamTotal.Sent),
			Received: total.Received - min(total.Received, teamTotal.Received),
		}),
		Days:      []Day{},
		Teams:     []Team{},
		Protocols: []Protocol{},
		Peers:     []Peer{},
	}
	for d, c := range days {
		r.Days = append(r.Days, Day{Date: fmt.Sprintf("%04d-%02d-%02d", d/10000, d/100%100, d%100), Bytes: bytesOf(c)})
	}
	slices.SortFunc(r.Days, func(a, b Day) int { return strings.Compare(a.Date, b.Date) })
	for topic, ts := range teams {
		ut := Team{Topic: topic.Short(), Gossip: bytesOf(ts.gossip), Sync: bytesOf(ts.sync), Bytes: bytesOf(ts.gossip.Add(ts.sync))}
		if names.Team != nil {
			if id, name, ok := names.Team(topic); ok {
				ut.ID, ut.Name = id.String(), name
			}
		}
		r.Teams = append(r.Teams, ut)
	}
	slices.SortFunc(r.Teams, func(a, b Team) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.Topic, b.Topic))
	})
	for p, c := range protos {
		r.Protocols = append(r.Protocols, Protocol{Protocol: p, Bytes: bytesOf(c)})
	}
	slices.SortFunc(r.Protocols, func(a, b Protocol) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.Protocol, b.Protocol))
	})
	var others storage.UsageCount
	for p, c := range peers {
		if p == "" {
			others = others.Add(c)
			continue
		}
		up := Peer{Device: "?", PeerID: peer.ID(p).String(), Bytes: bytesOf(c)}
		if names.Device != nil {
			if d, err := names.Device(peer.ID(p)); err == nil {
				up.Device = d.Short()
			}
		}
		r.Peers = append(r.Peers, up)
	}
	slices.SortFunc(r.Peers, func(a, b Peer) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.PeerID, b.PeerID))
	})
	for _, p := range r.Peers[min(topPeers, len(r.Peers)):] {
		others = others.Add(storage.UsageCount{Sent: p.Sent, Received: p.Received})
	}
	r.Peers = r.Peers[:min(topPeers, len(r.Peers))]
	if others != (storage.UsageCount{}) {
		r.Peers = append(r.Peers, Peer{Device: "other", Bytes: bytesOf(others)})
	}
	return r, nil
}
