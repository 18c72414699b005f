package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node/usage"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// catchUpMessages is how many short messages the away device catches up on in BenchmarkCatchUp.
const catchUpMessages = 100

// BenchmarkCatchUp is the wire-format issue's reconciliation figure: a device that was away catches
// up on 100 short clinical messages (37-byte texts with a patient reference) from a team mate, over a
// real socket (two nodes with libp2p hosts on loopback TCP). Both nodes are restarted after the
// messages are sent, so GossipSub's message cache is empty and every message comes by
// reconciliation, as it does after a day out of signal.
//
// It reports, from the away device's own data accounting (node/usage, stream payload bytes both
// ways): sync-B, the bytes of the sync protocol's streams (the reconciliation sessions); sync-B/msg, those per
// message; wire-B, every byte both ways from the reconnection to the last message (identify, pubsub
// control, membership exchange included); envelope-B, the bytes of the envelopes the device lacked,
// which any protocol must move; x-envelopes, sync-B over envelope-B; and x-every-id, sync-B over a
// "send every id" exchange of the same sets (each side's every op id, and the missing envelopes).
// Run with -benchtime=1x: one op is the whole scenario.
func BenchmarkCatchUp(b *testing.B) {
	for b.Loop() {
		r := catchUp(b)
		b.ReportMetric(float64(r.sync), "sync-B")
		b.ReportMetric(float64(r.sync)/catchUpMessages, "sync-B/msg")
		b.ReportMetric(float64(r.wire), "wire-B")
		b.ReportMetric(float64(r.envelopes), "envelope-B")
		b.ReportMetric(float64(r.sync)/float64(r.envelopes), "x-envelopes")
		b.ReportMetric(float64(r.sync)/float64(r.everyID), "x-every-id")
	}
}

type catchUpResult struct {
	sync, wire, envelopes, everyID uint64
}

func catchUp(tb testing.TB) catchUpResult {
	tb.Helper()
	mkStore := func() *storage.Store {
		st, err := storage.Create(tb.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: testKDF})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { st.Close() })
		return st
	}
	start := func(st *storage.Store, bootstrap ...*Node) *Node {
		var addrs []string
		for _, o := range bootstrap {
			for _, a := range o.Host().Addrs() {
				addrs = append(addrs, fmt.Sprintf("%s/p2p/%s", a, o.Host().ID()))
			}
		}
		n, err := New(Config{
			Store: st, NoMDNS: true, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: addrs,
			SyncInterval: time.Hour, AckInterval: time.Hour,
		})
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	sa, sb := mkStore(), mkStore()
	for st, name := range map[*storage.Store]string{sa: "Dr Banda", sb: "Nurse Phiri"} {
		if _, err := Init(st, name); err != nil {
			tb.Fatal(err)
		}
	}
	a, bn := start(sa), start(sb)
	team, err := a.CreateTeam("Maternity Ward 3", crdt.Clinical)
	if err != nil {
		tb.Fatal(err)
	}
	inv, err := a.Invite(team.ID.String(), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := bn.Join(tb.Context(), inv.Code()); err != nil {
		tb.Fatal(err)
	}
	ref := team.ID.String()
	if err := bn.Close(); err != nil {
		tb.Fatal(err)
	}

	// Away: the team mate writes.
	text := strings.Repeat("BP 150/95 at 34 weeks, review today. ", 2)[:37]
	for i := range catchUpMessages {
		if _, _, err := a.Send(ref, crdt.Message{Text: text, Patient: fmt.Sprintf("MRN %07d", 42000+i)}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		tb.Fatal(err)
	}

	// What the away device lacks, and what "send every id" would cost for these sets.
	topic := envelope.TopicOf(team.ID)
	has := map[crdt.OpID]bool{}
	keysB, err := sb.EnvelopeKeys(topic)
	if err != nil {
		tb.Fatal(err)
	}
	for _, k := range keysB {
		has[k.ID] = true
	}
	keysA, err := sa.EnvelopeKeys(topic)
	if err != nil {
		tb.Fatal(err)
	}
	var res catchUpResult
	for _, k := range keysA {
		if has[k.ID] {
			continue
		}
		r, err := sa.Envelope(k.ID)
		if err != nil {
			tb.Fatal(err)
		}
		res.envelopes += uint64(len(r.Data))
	}
	res.everyID = res.envelopes + uint64(len(crdt.OpID{}))*uint64(len(keysA)+len(keysB))

	// Back: both restart, and the away device dials its team mate.
	a = start(sa)
	defer a.Close()
	before := usageOf(tb, sb, nil)
	bn = start(sb, a)
	defer bn.Close()
	ch, cancel, err := bn.Watch(ref)
	if err != nil {
		tb.Fatal(err)
	}
	defer cancel()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		ms, err := bn.Messages(ref)
		if err != nil {
			tb.Fatal(err)
		}
		if len(ms) >= catchUpMessages {
			break
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("the away device holds %d of %d messages after 60s", len(ms), catchUpMessages)
		}
	}
	after := usageOf(tb, sb, bn)
	res.sync = after.sync - before.sync
	res.wire = after.wire - before.wire
	tb.Logf("catch-up of %d messages: %d B of sessions (%.0f B a message), %d B on the wire; the envelopes lacked: %d B; send every id: %d B",
		catchUpMessages, res.sync, float64(res.sync)/catchUpMessages, res.wire, res.envelopes, res.everyID)
	return res
}

type usageTotals struct{ sync, wire uint64 }

// usageOf returns a device's reconciliation bytes (the sync protocol's streams, both ways) and wire
// total this month: from n, the node
// running on st, or from the store when n is nil (the node closed, its counts flushed).
func usageOf(tb testing.TB, st *storage.Store, n *Node) usageTotals {
	tb.Helper()
	var rep usage.Report
	var err error
	if n == nil {
		rep, err = usage.New(st, usage.Config{}).Report("", usage.Names{})
	} else {
		rep, err = n.Usage("")
	}
	if err != nil {
		tb.Fatal(err)
	}
	u := usageTotals{wire: rep.Total.Total}
	for _, p := range rep.Protocols {
		if strings.HasPrefix(p.Protocol, "/fieldmesh/sync/") {
			u.sync += p.Total
		}
	}
	return u
}
