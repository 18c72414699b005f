package emul

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	stdsync "sync"
	"testing/synctest"
	"time"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/simulations/sim"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Strategy is the name the emulation's results carry: the node's own
// carrying (members gossip and reconcile their teams' envelopes), which is
// the simulator's "members" strategy.
const Strategy = "members"

// Limits of what is emulated: each device is a whole node.
const (
	maxDevices = 64
	// setupWithin bounds, in (virtual) time, the enrolment of every team.
	setupWithin = time.Hour
)

// Errors of a configuration the emulation cannot run.
var (
	ErrStrategy = errors.New("emul: only the node's own strategy (members) is emulated")
	ErrRelays   = errors.New("emul: clinic relays are not emulated")
	ErrSize     = fmt.Errorf("emul: more than %d devices", maxDevices)
	ErrNoBubble = errors.New("emul: Run must be called inside a testing/synctest bubble")
)

// Report is one emulation run: the result in the simulator's own form
// (so sim.Summarize and the simulator's outputs apply), and what the
// emulation observed beyond it.
type Report struct {
	*sim.Result
	// OffContact counts deliveries observed at a device that had no open
	// contact at that (virtual) instant: the network carried something the
	// trace did not allow. A faithful run has none.
	OffContact int
	// Late is the most a step of the trace (a contact opening or closing,
	// a message) was carried out after its time: the emulation's driver is
	// held while a step before it completes in virtual time.
	Late time.Duration
	// Setup is the virtual time the teams' enrolment took before the
	// trace started.
	Setup time.Duration
}

// Run runs cfg's devices, teams, contacts and messages on real nodes on a
// libp2p mocknet. It must be called inside a testing/synctest bubble
// (ErrNoBubble otherwise): every timer of the nodes, of GossipSub and of
// mocknet's links then runs in virtual time, so hours of contacts take
// seconds, and the emulation settles the network (synctest.Wait) before
// it closes a contact (package doc).
//
// cfg.Strategy must be the simulator's "members" (what a node does);
// cfg.TickEvery, MaxFrame, Link.Step and Link.Exclusive are the
// simulator's own and are ignored (the node has its own timers: package
// doc). The result's Strategy is Strategy, hops are not observed (0), and
// message sizes are the text's. Bytes are the nodes' sync-session bytes
// (Status), not gossip's; relayed copies (and so the overhead ratio) are
// not observed and are left zero.
func Run(cfg sim.Config) (*Report, error) {
	if !inBubble() {
		return nil, ErrNoBubble
	}
	if cfg.Duration <= 0 {
		return nil, errors.New("emul: the run has no duration")
	}
	if cfg.Strategy.Carry != sim.CarryMembers || cfg.Strategy.Copies != 0 || cfg.Strategy.Buffer != 0 {
		return nil, fmt.Errorf("%w, not %q", ErrStrategy, cfg.Strategy.Name)
	}
	if len(cfg.Devices) > maxDevices {
		return nil, ErrSize
	}
	for _, d := range cfg.Devices {
		if d.Relay {
			return nil, ErrRelays
		}
	}
	for ti, ts := range cfg.Teams {
		if len(ts.Relays) > 0 {
			return nil, ErrRelays
		}
		if len(ts.Members) == 0 {
			return nil, fmt.Errorf("emul: team %d has no members", ti)
		}
		for _, m := range ts.Members {
			if m < 0 || m >= len(cfg.Devices) {
				return nil, fmt.Errorf("emul: team %d: no device %d", ti, m)
			}
		}
	}
	for _, c := range cfg.Contacts {
		if c.A < 0 || c.B < 0 || c.A >= len(cfg.Devices) || c.B >= len(cfg.Devices) || c.A == c.B {
			return nil, fmt.Errorf("emul: contact between %d and %d: no such pair of devices", c.A, c.B)
		}
	}
	for i, m := range cfg.Messages {
		if m.Team < 0 || m.Team >= len(cfg.Teams) || !slices.Contains(cfg.Teams[m.Team].Members, m.From) ||
			(m.To >= 0 && !slices.Contains(cfg.Teams[m.Team].Members, m.To)) {
			return nil, fmt.Errorf("emul: message %d: sender or recipient not in team %d", i, m.Team)
		}
	}
	e := &emulation{cfg: cfg, mn: mocknet.New(), open: make(map[[2]int]int), byPeer: make(map[peer.ID]int),
		streams: make(map[[2]int][]network.Stream), enrolling: true}
	defer e.close()
	if err := e.start(); err != nil {
		return nil, err
	}
	return e.run()
}

type device struct {
	n    *node.Node
	st   *storage.Store
	peer peer.ID
	// seen is when each op first showed among its teams' messages, since t0.
	seen map[crdt.OpID]time.Duration
}

type emulation struct {
	cfg  sim.Config
	mn   mocknet.Mocknet
	devs []*device
	refs []string // team references, by team index

	mu stdsync.Mutex // guards devs[*].seen
	t0 time.Time     // the trace's zero; set before the watchers start

	// smu guards open (read by the hosts' guards) and streams.
	smu     stdsync.Mutex
	open    map[[2]int]int // open contacts (a trace may open a pair twice)
	degree  []int          // open contacts per device
	byPeer  map[peer.ID]int
	streams map[[2]int][]network.Stream // streams of each open contact (guard.go)
	// enrolling: every pair counts as in contact (start).
	enrolling bool

	setup    time.Duration
	stop     context.CancelFunc
	watchers stdsync.WaitGroup
}

func (e *emulation) close() {
	if e.stop != nil {
		e.stop()
	}
	e.watchers.Wait()
	for _, d := range e.devs {
		if d.n != nil {
			d.n.Close()
		}
		d.st.Close()
	}
	e.mn.Close()
}

// start makes a node per device with an in-memory store, links them all,
// enrols every team as real devices are (the first member creates it and
// invites the others one by one, each joining with its code), waits until
// every member sees the whole team, then cuts every link: the trace starts
// from no contact, as the simulator's runs do.
func (e *emulation) start() error {
	e.mn.SetLinkDefaults(mocknet.LinkOptions{Latency: e.cfg.Link.Latency, Bandwidth: e.cfg.Link.Bandwidth})
	ack := time.Duration(0) // the node's default
	if !e.cfg.Acks {
		ack = -1
	}
	for i, spec := range e.cfg.Devices {
		st, err := storage.CreateMemory(storage.Options{})
		if err != nil {
			return err
		}
		d := &device{st: st, seen: make(map[crdt.OpID]time.Duration)}
		e.devs = append(e.devs, d)
		name := spec.Name
		if name == "" {
			name = fmt.Sprintf("n%d", i)
		}
		id, err := node.Init(st, name)
		if err != nil {
			return fmt.Errorf("emul: device %d: %w", i, err)
		}
		sk, err := lcrypto.UnmarshalEd25519PrivateKey(id.Device.SigningKey())
		if err != nil {
			return err
		}
		h, err := e.mn.AddPeer(sk, ma.StringCast(fmt.Sprintf("/ip4/127.0.%d.%d/tcp/4001", (i+1)/250, (i+1)%250+1)))
		if err != nil {
			return err
		}
		d.peer = h.ID()
		e.byPeer[d.peer] = i
		d.n, err = node.New(node.Config{Store: st, Host: &guardedHost{Host: h, e: e, idx: i}, NoMDNS: true, AckInterval: ack, ReviewEvery: -1,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return fmt.Errorf("emul: device %d: %w", i, err)
		}
	}
	e.degree = make([]int, len(e.devs))
	if err := e.mn.LinkAll(); err != nil {
		return err
	}
	setupStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), setupWithin)
	defer cancel()
	for ti, ts := range e.cfg.Teams {
		admin := e.devs[ts.Members[0]].n
		name := ts.Name
		if name == "" {
			name = fmt.Sprintf("team %d", ti)
		}
		info, err := admin.CreateTeam(name, crdt.Clinical)
		if err != nil {
			return fmt.Errorf("emul: team %d: %w", ti, err)
		}
		ref := info.ID.String()
		e.refs = append(e.refs, ref)
		for _, m := range ts.Members[1:] {
			inv, err := admin.Invite(ref, 0)
			if err != nil {
				return fmt.Errorf("emul: team %d: %w", ti, err)
			}
			if _, err := e.devs[m].n.Join(ctx, inv.Code()); err != nil {
				return fmt.Errorf("emul: team %d: device %d joins: %w", ti, m, err)
			}
		}
		for _, m := range ts.Members {
			if err := waitMembers(ctx, e.devs[m].n, ref, len(ts.Members)); err != nil {
				return fmt.Errorf("emul: team %d: device %d: %w", ti, m, err)
			}
		}
	}
	for i := range e.devs {
		for j := i + 1; j < len(e.devs); j++ {
			_ = e.mn.UnlinkPeers(e.devs[i].peer, e.devs[j].peer)
		}
	}
	for i := range e.devs {
		for j := i + 1; j < len(e.devs); j++ {
			synctest.Wait() // nothing is opening a stream (see contact)
			_ = e.mn.DisconnectPeers(e.devs[i].peer, e.devs[j].peer)
		}
	}
	e.cutAll()
	// Let what the cut interrupted settle (a second of virtual time) before the trace's zero.
	time.Sleep(time.Second)
	for _, d := range e.devs {
		if cs := d.n.Host().Network().Conns(); len(cs) > 0 {
			return fmt.Errorf("emul: %d connections left after the cut", len(cs))
		}
	}
	e.t0 = time.Now()
	e.setup = e.t0.Sub(setupStart)
	wctx, stop := context.WithCancel(context.Background())
	e.stop = stop
	for ti, ts := range e.cfg.Teams {
		for _, m := range ts.Members {
			ch, cancel, err := e.devs[m].n.Watch(e.refs[ti])
			if err != nil {
				return err
			}
			e.watchers.Add(1)
			go e.watch(wctx, m, ti, ch, cancel)
		}
	}
	return nil
}

// waitMembers waits, on the node's watch events, until it shows want persons in the team.
func waitMembers(ctx context.Context, n *node.Node, ref string, want int) error {
	ch, cancel, err := n.Watch(ref)
	if err != nil {
		return err
	}
	defer cancel()
	for {
		ms, err := n.Members(ref)
		if err != nil {
			return err
		}
		if len(ms) >= want {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("sees %d of the team's %d members after enrolment", len(ms), want)
		}
	}
}

// watch records when each message first shows on device m, through the node's own watch events and
// message list.
func (e *emulation) watch(ctx context.Context, m, ti int, ch <-chan struct{}, cancel func()) {
	defer e.watchers.Done()
	defer cancel()
	d := e.devs[m]
	for {
		if ms, err := d.n.Messages(e.refs[ti]); err == nil {
			e.mu.Lock()
			now := time.Since(e.t0)
			for _, x := range ms {
				if _, ok := d.seen[x.ID]; !ok && !x.Queued {
					d.seen[x.ID] = now
				}
			}
			e.mu.Unlock()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// step is one event of the trace: a contact opening or closing, or a message.
type step struct {
	at      time.Duration
	contact *sim.ContactEvent
	msg     int
}

func (e *emulation) run() (*Report, error) {
	var steps []step
	for i := range e.cfg.Contacts {
		c := &e.cfg.Contacts[i]
		if c.At <= e.cfg.Duration {
			steps = append(steps, step{at: c.At, contact: c})
		}
	}
	for i, m := range e.cfg.Messages {
		if m.At <= e.cfg.Duration {
			steps = append(steps, step{at: m.At, msg: i})
		}
	}
	// Contacts before messages at the same instant, each kind in its given order.
	slices.SortStableFunc(steps, func(a, b step) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(boolInt(a.contact == nil), boolInt(b.contact == nil))
	})
	res := &sim.Result{Strategy: Strategy, Seed: e.cfg.Seed, Duration: e.cfg.Duration}
	ids := make([]crdt.OpID, len(e.cfg.Messages))
	sent := make([]bool, len(e.cfg.Messages))
	var offContact []offCheck
	var late time.Duration
	for _, s := range steps {
		time.Sleep(time.Until(e.t0.Add(s.at)))
		late = max(late, time.Since(e.t0)-s.at)
		if s.contact != nil {
			if err := e.contact(*s.contact); err != nil {
				return nil, err
			}
			if s.contact.Up {
				res.Contacts++
			}
			continue
		}
		ms := e.cfg.Messages[s.msg]
		r := sim.MessageResult{Index: s.msg, Team: ms.Team, From: ms.From, To: ms.To, Created: time.Since(e.t0),
			Size: max(ms.Size, 1), Priority: ms.Priority, TTL: ms.TTL}
		if ms.To >= 0 {
			r.Recipients = []int{ms.To}
		} else {
			for _, x := range e.cfg.Teams[ms.Team].Members {
				if x != ms.From {
					r.Recipients = append(r.Recipients, x)
				}
			}
		}
		id, _, err := e.devs[ms.From].n.Send(e.refs[ms.Team], crdt.Message{Text: filler(ms.Size), Priority: ms.Priority})
		if err != nil {
			r.Failed = err.Error()
		} else {
			ids[s.msg], sent[s.msg] = id, true
		}
		res.Messages = append(res.Messages, r)
	}
	time.Sleep(time.Until(e.t0.Add(e.cfg.Duration)))
	e.stop()
	e.watchers.Wait()

	rep := &Report{Result: res, Setup: e.setup, Late: late}
	for k := range res.Messages {
		r := &res.Messages[k]
		if !sent[r.Index] {
			continue
		}
		for _, x := range r.Recipients {
			if at, ok := e.devs[x].seen[ids[r.Index]]; ok && at <= e.cfg.Duration {
				r.Deliveries = append(r.Deliveries, sim.Delivery{Device: x, At: at})
				offContact = append(offContact, offCheck{x, at})
			}
		}
		slices.SortFunc(r.Deliveries, func(a, b sim.Delivery) int { return cmp.Compare(a.At, b.At) })
	}
	rep.OffContact = e.countOffContact(offContact)
	for i, d := range e.devs {
		st := d.n.Status()
		res.Devices = append(res.Devices, sim.DeviceStats{Name: e.cfg.Devices[i].Name,
			BytesSent: st.Sync.BytesSent, BytesReceived: st.Sync.BytesReceived})
		res.Bytes += st.Sync.BytesSent
	}
	res.Summary = sim.Summarize(res)
	res.Summary.Overhead = 0 // not observed: Summarize's -1 would read as a figure
	return rep, nil
}

type offCheck struct {
	dev int
	at  time.Duration
}

// countOffContact counts deliveries at instants their device had no open contact, replaying the
// trace's contacts.
func (e *emulation) countOffContact(ds []offCheck) int {
	slices.SortFunc(ds, func(a, b offCheck) int { return cmp.Compare(a.at, b.at) })
	degree := make([]int, len(e.devs))
	open := make(map[[2]int]int)
	n, ci := 0, 0
	cs := e.cfg.Contacts
	for _, d := range ds {
		// Contacts opening at or before the delivery count; closing at its instant too (a close and
		// a delivery at the same virtual instant: the delivery came over the link first).
		for ci < len(cs) && (cs[ci].At < d.at || cs[ci].At == d.at && cs[ci].Up) {
			applyContact(open, degree, cs[ci])
			ci++
		}
		if degree[d.dev] == 0 {
			n++
		}
	}
	return n
}

func applyContact(open map[[2]int]int, degree []int, c sim.ContactEvent) (first, last bool) {
	k := [2]int{min(c.A, c.B), max(c.A, c.B)}
	if c.Up {
		open[k]++
		if open[k] == 1 {
			degree[c.A]++
			degree[c.B]++
			return true, false
		}
		return false, false
	}
	if open[k] == 0 {
		return false, false
	}
	open[k]--
	if open[k] == 0 {
		degree[c.A]--
		degree[c.B]--
		return false, true
	}
	return false, false
}

// contact opens a contact (links the two peers with the scenario's link options and connects them:
// the nodes' own connection handlers then start their sessions) or closes it (unlinks them, so
// neither can dial the other, and disconnects them: mocknet resets their streams, and what was in
// flight is lost).
func (e *emulation) contact(c sim.ContactEvent) error {
	e.smu.Lock()
	first, last := applyContact(e.open, e.degree, c)
	e.smu.Unlock()
	a, b := e.devs[c.A].peer, e.devs[c.B].peer
	switch {
	case first:
		if _, err := e.mn.LinkPeers(a, b); err != nil {
			return fmt.Errorf("emul: contact %d-%d: %w", c.A, c.B, err)
		}
		if _, err := e.mn.ConnectPeers(a, b); err != nil {
			return fmt.Errorf("emul: contact %d-%d: %w", c.A, c.B, err)
		}
	case last:
		if err := e.mn.UnlinkPeers(a, b); err != nil {
			return fmt.Errorf("emul: contact %d-%d: %w", c.A, c.B, err)
		}
		// Settle first: a stream mocknet opens while its connection closes escapes the close
		// (package doc), so nothing may be opening one.
		synctest.Wait()
		_ = e.mn.DisconnectPeers(a, b)
		e.cut(c.A, c.B)
		synctest.Wait()
		if len(e.devs[c.A].n.Host().Network().ConnsToPeer(b)) > 0 || len(e.devs[c.B].n.Host().Network().ConnsToPeer(a)) > 0 {
			return fmt.Errorf("emul: contact %d-%d: still connected after the close", c.A, c.B)
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// filler is a message text of n bytes (the simulator's workload texts are filler too).
func filler(n int) string {
	n = min(max(n, 1), crdt.MaxTextLen)
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}

// inBubble reports whether the caller runs in a synctest bubble (synctest.Wait panics outside one).
func inBubble() (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	synctest.Wait()
	return true
}
