package node

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/historyproto"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

// A device linked to a person gets the person's history from their other devices
// (node/historyproto; what is handed over and kept is the device core's: HistoryFor, AcceptHistory).
// It asks after its join, and again whenever it has synced with another device of its person while a
// hand-over of that team is unfinished; each page is stored before the next is asked, with the cursor
// after it, so a hand-over cut off resumes where it stopped. FetchHistory asks on demand.

// historyTimeout bounds one hand-over stream: 32 MiB over a slow link takes minutes.
const historyTimeout = 10 * time.Minute

// historyState is what the node knows of its hand-overs. The zero value is ready.
type historyState struct {
	mu   stdsync.Mutex
	busy map[crdt.TeamID]chan struct{} // a hand-over of this team is running; closed when it ends
}

// historySecret names the store secret holding the progress of a team's hand-over from one device
// (each of the person's devices is asked once: one may hold history another lacks):
//
//	version 1 | done u8 | cursor time u64 | cursor op id
func historySecret(id crdt.TeamID, from identity.DeviceID) string {
	return "history/" + hex.EncodeToString(id[:]) + "/" + hex.EncodeToString(from[:])
}

type historyProgress struct {
	done bool
	at   device.HistoryCursor
}

func (n *Node) historyProgress(id crdt.TeamID, from identity.DeviceID) (historyProgress, error) {
	b, err := n.st.Secret(historySecret(id, from))
	if errors.Is(err, storage.ErrNotFound) {
		return historyProgress{}, nil
	}
	if err != nil {
		return historyProgress{}, err
	}
	if len(b) != 2+8+len(crdt.OpID{}) || b[0] != 1 || b[1] > 1 {
		return historyProgress{}, nil // unreadable: start over (a hand-over is idempotent)
	}
	p := historyProgress{done: b[1] == 1, at: device.HistoryCursor{Time: crdt.HLC(binary.BigEndian.Uint64(b[2:]))}}
	copy(p.at.ID[:], b[10:])
	return p, nil
}

func (n *Node) putHistoryProgress(id crdt.TeamID, from identity.DeviceID, p historyProgress) error {
	b := []byte{1, 0}
	if p.done {
		b[1] = 1
	}
	b = binary.BigEndian.AppendUint64(b, uint64(p.at.Time))
	b = append(b, p.at.ID[:]...)
	return n.st.PutSecret(historySecret(id, from), b)
}

// handleHistory serves the history protocol: pages of a team's history to another current device of
// this device's person, as the connection's Noise handshake proves it; everyone else is refused.
func (n *Node) handleHistory(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(historyTimeout))
	p := s.Conn().RemotePeer()
	asker, err := deviceOf(p)
	if err != nil {
		s.Reset()
		return
	}
	err = historyproto.Serve(s, n.id.Device, asker, historySource{n})
	switch {
	case errors.Is(err, device.ErrNotSamePerson):
		n.log.Info("history refused", "peer", p.ShortString())
		_ = s.CloseWrite()
	case err != nil && !errors.Is(err, io.EOF):
		n.log.Debug("history stream ended", "peer", p.ShortString(), "err", err)
		s.Reset()
	}
}

// historyRefusal is the refusal the asker is shown: a sentence with no package prefix, which says
// nothing of whether this device is in the team.
type historyRefusal struct{}

func (historyRefusal) Error() string {
	return "a device hands its history only to another current device of its own person in the team"
}
func (historyRefusal) Unwrap() error { return device.ErrNotSamePerson }

// historySource is the node's teams as historyproto.Serve sees them.
type historySource struct{ n *Node }

var _ historyproto.Source = historySource{}

func (h historySource) History(id crdt.TeamID, asker identity.DeviceID, after device.HistoryCursor, maxBytes int) (historyproto.Page, identity.NoisePublic, error) {
	t := h.n.teamByID(id)
	if t == nil {
		return historyproto.Page{}, identity.NoisePublic{}, historyRefusal{} // the answer for a team it is in
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ops, next, more, err := t.core.HistoryFor(asker, after, maxBytes)
	if errors.Is(err, device.ErrNotSamePerson) {
		return historyproto.Page{}, identity.NoisePublic{}, historyRefusal{}
	}
	if err != nil {
		return historyproto.Page{}, identity.NoisePublic{}, err
	}
	noise, ok := t.core.MemberNoise(asker)
	if !ok {
		return historyproto.Page{}, identity.NoisePublic{}, historyRefusal{}
	}
	return historyproto.Page{Ops: ops, Next: next, More: more}, noise, nil
}

// FetchHistory asks another device of this device's person (deviceRef: 8 or more hex characters of
// its id) for the team's history now, and returns how many ops it kept. The other device refuses
// unless both are current devices of one person. A hand-over of the team already running (the
// one a sync starts by itself) is waited for first.
func (n *Node) FetchHistory(ctx context.Context, teamRef, deviceRef string) (int, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return 0, err
	}
	d, _, err := findDevice(t.snapshot(), deviceRef)
	if err != nil {
		return 0, err
	}
	if d == n.id.Device.ID() {
		return 0, errors.New("node: that is this device")
	}
	pid, err := PeerID(d)
	if err != nil {
		return 0, fmt.Errorf("node: %w", err)
	}
	return n.fetchHistory(ctx, t, pid, true)
}

var errHistoryBusy = errors.New("node: a history hand-over of this team is already running")

// testHookHistoryPage, set only by tests, is called after each page of a hand-over n fetches is
// stored, with the cursor the page was asked after.
var testHookHistoryPage atomic.Pointer[func(n *Node, team crdt.TeamID, asked device.HistoryCursor)]

// historySoon starts a hand-over of t from p, if p is another device of this device's person and no
// hand-over of t from p finished or is running.
func (n *Node) historySoon(p peer.ID, t *team) {
	d, err := deviceOf(p)
	if err != nil {
		return
	}
	s := t.snapshot()
	me, ok := s.PersonOf(n.id.Device.ID())
	if other, ok2 := s.PersonOf(d); !ok || !ok2 || other.ID != me.ID || d == n.id.Device.ID() {
		return
	}
	if prog, err := n.historyProgress(t.id, d); err != nil || prog.done {
		return
	}
	n.goRun(func() {
		if _, err := n.fetchHistory(n.ctx, t, p, false); err != nil && !errors.Is(err, errHistoryBusy) && n.ctx.Err() == nil {
			n.log.Info("history hand-over not finished; it is asked again at the next sync", "team", t.id, "peer", p.ShortString(), "err", err)
		}
	})
}

// fetchHistory runs a hand-over of t from p, page by page from the stored cursor (from the start
// with again), each page stored before the next is asked.
func (n *Node) fetchHistory(ctx context.Context, t *team, p peer.ID, again bool) (int, error) {
	// One hand-over of a team at a time. A background one (again false) gives way to a running one;
	// one the user asked for waits for it to end, then runs.
	for {
		n.hist.mu.Lock()
		running, busy := n.hist.busy[t.id]
		if !busy {
			if n.hist.busy == nil {
				n.hist.busy = make(map[crdt.TeamID]chan struct{})
			}
			n.hist.busy[t.id] = make(chan struct{})
			n.hist.mu.Unlock()
			break
		}
		n.hist.mu.Unlock()
		if !again {
			return 0, errHistoryBusy
		}
		select {
		case <-running:
		case <-ctx.Done():
			return 0, fmt.Errorf("node: waiting for the running history hand-over: %w", ctx.Err())
		}
	}
	defer func() {
		n.hist.mu.Lock()
		close(n.hist.busy[t.id])
		delete(n.hist.busy, t.id)
		n.hist.mu.Unlock()
	}()
	server, err := deviceOf(p)
	if err != nil {
		return 0, fmt.Errorf("node: %w", err)
	}
	prog, err := n.historyProgress(t.id, server)
	if err != nil {
		return 0, err
	}
	if again {
		prog = historyProgress{}
	} else if prog.done {
		return 0, nil
	}
	t.mu.Lock()
	noise, ok := t.core.MemberNoise(server)
	t.mu.Unlock()
	if !ok {
		return 0, errors.New("node: that device is not a member of the team")
	}
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, p, historyproto.Protocol)
	if err != nil {
		return 0, fmt.Errorf("node: open history stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(historyTimeout))
	kept := 0
	for range historyproto.MaxPages {
		page, err := historyproto.Fetch(s, n.id.Device, server, noise, historyproto.Ask{Team: t.id, After: prog.at})
		if err != nil {
			s.Reset()
			return kept, err
		}
		err = n.do(t, func(c *device.Team, now time.Time) (device.Effects, error) {
			k, eff, err := c.AcceptHistory(now, server, page.Ops)
			kept += k
			return eff, err
		})
		if err != nil {
			s.Reset()
			return kept, err
		}
		asked := prog.at
		prog = historyProgress{done: !page.More, at: page.Next}
		if err := n.putHistoryProgress(t.id, server, prog); err != nil {
			return kept, err
		}
		if hook := testHookHistoryPage.Load(); hook != nil {
			(*hook)(n, t.id, asked)
		}
		if !page.More {
			break
		}
	}
	_ = s.CloseWrite()
	n.log.Info("history handed over", "team", t.id, "from", p.ShortString(), "ops", kept)
	return kept, nil
}
