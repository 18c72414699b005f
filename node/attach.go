package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	stdsync "sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/fieldmesh/fieldmesh/node/photo"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Attachments (sync/attach, docs/security.md "Attachments"). A message carries its attachments'
// manifests in its sealed body; the chunks travel apart, over ChunkProtocol, pulled by the devices
// that opened the message from any peer that may sync the team and holds them:
//
//   - after every reconciliation with a peer, and whenever that peer's envelopes brought new ops, the
//     node pulls the chunks it lacks of the messages it should fetch now (attach.FetchNow: always,
//     except in low-data mode, where only urgent and emergency messages' attachments come at once,
//     or any over a free link — a LAN or loopback address — and the rest when the user asks);
//   - every chunk is checked against its manifest before it is stored, one store write per chunk, so
//     a cut transfer resumes where it stopped; a peer that sends a chunk that does not match, or a
//     malformed frame, is banned like one that sends invalid envelopes beyond its budget: an honest
//     peer checks every chunk before it stores or serves it, so one bad chunk is proof enough;
//   - a node answers chunk requests from peers that may sync one of its teams, with any chunk it
//     holds: chunks are sealed and named by the hash of their ciphertext, which only readers of the
//     message know.
//
// Chunks live only in the encrypted store (storage: keyspaces 0x40-0x42), owned by their message's op
// id, and are deleted with the message's body (device.Write.DropChunks), or evicted by the storage
// budget (budget.go). A relay cannot read manifests, so devices push chunks to it (pushTo); a relay's
// confirmation that it holds all of a message's chunks is kept in the store (storage.SetHeld), so the
// message is not offered to it again. Fetches, pushes and budget passes run as coalesced jobs
// (coalescer): one per key at a time.

// ChunkProtocol is the attachment chunk stream (attach.Pull and attach.Answer).
const ChunkProtocol = protocol.ID(attach.Protocol)

const (
	// chunkTimeout bounds one chunk session: 4 MiB over a 256 kbit/s link takes about 2 min.
	chunkTimeout = 5 * time.Minute
	// MaxAttachmentFile is the largest file Node.SendAttached takes: an image is re-encoded first
	// (photo), so a camera's file may be larger than what is sent; anything else must fit
	// crdt.MaxAttachmentSize as it is.
	MaxAttachmentFile = 32 << 20
)

// Attachment is a file to attach to a message: its media type and bytes.
type Attachment struct {
	Type string
	Data []byte
}

// ErrAttachmentMissing is returned for an attachment whose chunks are not all on this device yet.
var ErrAttachmentMissing = errors.New("node: the attachment is not all on this device yet")

// attachments is the node's attachment fetching state.
type attachments struct {
	jobs coalescer // the fetches ("fetch " + peer + topic), pushes ("push " + peer + topic), "budget"
	// budgetMu serialises the storage budget's passes (budget.go), so two never evict for one excess.
	budgetMu stdsync.Mutex

	mu        stdsync.Mutex
	requested map[crdt.OpID]bool
	complete  map[crdt.OpID]bool // messages whose chunks are all stored here
}

// SendAttached posts a message with attachments. Images (photo.IsImage) are re-encoded first
// (photo.Reencode: scaled to a phone screen, no EXIF or other metadata); each attachment is sealed
// under its own key (attach.Seal) and its chunks stored, durably, before the message is: when it
// returns the message and its attachments are acknowledged. Oversized input is refused before
// anything is sealed or stored.
func (n *Node) SendAttached(teamRef string, m crdt.Message, files []Attachment) (crdt.OpID, crdt.HLC, error) {
	if len(files) > crdt.MaxAttachments {
		return crdt.OpID{}, 0, fmt.Errorf("node: %d attachments, limit %d", len(files), crdt.MaxAttachments)
	}
	for i, f := range files {
		if len(f.Data) > MaxAttachmentFile || (!photo.IsImage(f.Type) && len(f.Data) > crdt.MaxAttachmentSize) {
			return crdt.OpID{}, 0, fmt.Errorf("node: attachment %d is %d bytes, limit %d", i+1, len(f.Data), crdt.MaxAttachmentSize)
		}
	}
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return crdt.OpID{}, 0, err
	}
	var chunks [][][]byte
	total := 0
	for i, f := range files {
		typ, data := strings.ToLower(strings.TrimSpace(f.Type)), f.Data
		if photo.IsImage(typ) {
			if data, err = photo.Reencode(data); err != nil {
				return crdt.OpID{}, 0, fmt.Errorf("node: attachment %d: %w", i+1, err)
			}
			typ = photo.MediaType
		}
		total += len(data)
		if total > crdt.MaxMessageAttachmentBytes {
			return crdt.OpID{}, 0, fmt.Errorf("node: attachments of %d bytes or more, limit %d", total, crdt.MaxMessageAttachmentBytes)
		}
		a, cs, err := attach.Seal(nil, typ, data)
		if err != nil {
			return crdt.OpID{}, 0, fmt.Errorf("node: attachment %d: %w", i+1, err)
		}
		m.Attachments = append(m.Attachments, a)
		chunks = append(chunks, cs)
	}
	defer n.pushToRelays(t)
	op, err := n.send(t, m, func(op *crdt.Op) error {
		for i, a := range m.Attachments {
			for j, c := range chunks[i] {
				if err := n.st.PutChunk(op.ID(), a.Chunks[j], c); err != nil {
					return fmt.Errorf("node: storing an attachment: %w", err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return crdt.OpID{}, 0, err
	}
	n.budgetSoon()
	return op.ID(), op.Time, nil
}

// AttachmentInfo describes one attachment of a message, and how much of it this device holds.
type AttachmentInfo struct {
	Message crdt.OpID
	Index   int
	Type    string
	Size    int // plaintext bytes
	Chunks  int // chunks in all
	Stored  int // chunks on this device
	// Evicted: its chunks were evicted to keep within the storage budget (budget.go) and are not
	// fetched again unless asked for (OpenAttachment).
	Evicted bool
}

// Attachments lists the attachments of a team's messages, in message order.
func (n *Node) Attachments(teamRef string) ([]AttachmentInfo, error) {
	t, err := n.teamByRef(teamRef)
	if err != nil {
		return nil, err
	}
	var out []AttachmentInfo
	for _, m := range t.snapshot().Messages {
		if len(m.Attachments) == 0 {
			continue
		}
		evicted, err := n.st.Evicted(ownerKey(m.ID))
		if err != nil {
			return nil, err
		}
		for i, a := range m.Attachments {
			info := AttachmentInfo{Message: m.ID, Index: i, Type: a.Type, Size: a.Size, Chunks: len(a.Chunks), Evicted: evicted}
			for _, c := range a.Chunks {
				ok, err := n.st.HasChunk(c)
				if err != nil {
					return nil, err
				}
				if ok {
					info.Stored++
				}
			}
			out = append(out, info)
		}
	}
	return out, nil
}

// ParseAttachmentRef splits an attachment reference, MESSAGE or MESSAGE/N (N from 1; default 1),
// into the message reference and the 0-based index.
func ParseAttachmentRef(ref string) (string, int, error) {
	msg, num, ok := strings.Cut(strings.TrimSpace(ref), "/")
	if !ok {
		return msg, 0, nil
	}
	i, err := strconv.Atoi(num)
	if err != nil || i < 1 || i > crdt.MaxAttachments {
		return "", 0, fmt.Errorf("node: attachment number %q (want 1 to %d)", num, crdt.MaxAttachments)
	}
	return msg, i - 1, nil
}

// OpenAttachment returns the media type and bytes of attachment index of the message msgRef (its id
// or a unique prefix of MinMessageRef hex characters) in any of this device's teams, checked against
// its manifest. If some chunks are not here yet it asks the connected peers for them (as if the
// message were urgent) and returns ErrAttachmentMissing: try again once they arrived.
func (n *Node) OpenAttachment(msgRef string, index int) (string, []byte, error) {
	var found []crdt.MessageView
	for _, t := range n.teamList() {
		msgs := t.snapshot().Messages
		wrapped := make([]Message, len(msgs))
		for i, m := range msgs {
			wrapped[i] = Message{MessageView: m}
		}
		id, err := matchMessage(wrapped, msgRef)
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if m.ID == id {
				found = append(found, m)
			}
		}
	}
	switch {
	case len(found) == 0:
		return "", nil, fmt.Errorf("%w: %s", ErrUnknownMessage, msgRef)
	case len(found) > 1:
		return "", nil, fmt.Errorf("node: %q matches messages of several teams; give more of the id", msgRef)
	}
	m := found[0]
	if index < 0 || index >= len(m.Attachments) {
		return "", nil, fmt.Errorf("node: message %s has %d attachments", m.ID.Short(), len(m.Attachments))
	}
	a := m.Attachments[index]
	missing, err := attach.Missing([]crdt.Attachment{a}, n.st.HasChunk)
	if err != nil {
		return "", nil, err
	}
	if len(missing) > 0 {
		n.requestAttachments(m.ID)
		return "", nil, fmt.Errorf("%w: %d of %d chunks; asking the connected peers for the rest", ErrAttachmentMissing, len(a.Chunks)-len(missing), len(a.Chunks))
	}
	data, err := attach.Open(a, func(i int) ([]byte, error) { return n.st.Chunk(a.Chunks[i]) })
	if err != nil {
		return "", nil, fmt.Errorf("node: %w", err)
	}
	return a.Type, data, nil
}

// requestAttachments marks a message's attachments as asked for by the user (fetched whatever the
// low-data mode) and starts fetching from every connected peer.
func (n *Node) requestAttachments(id crdt.OpID) {
	n.att.mu.Lock()
	if n.att.requested == nil {
		n.att.requested = make(map[crdt.OpID]bool)
	}
	n.att.requested[id] = true
	n.att.mu.Unlock()
	for _, p := range n.host.Network().Peers() {
		for _, t := range n.teamList() {
			n.fetchSoon(p, t)
		}
	}
}

func (n *Node) isComplete(id crdt.OpID) bool {
	n.att.mu.Lock()
	defer n.att.mu.Unlock()
	return n.att.complete[id]
}

func (n *Node) isRequested(id crdt.OpID) bool {
	n.att.mu.Lock()
	defer n.att.mu.Unlock()
	return n.att.requested[id]
}

// fetchSoon fetches t's missing attachment chunks from p on a goroutine: at most one fetch per peer
// and team runs at a time, and a request that comes while one runs makes it run once more.
func (n *Node) fetchSoon(p peer.ID, t *team) {
	n.att.jobs.soon("fetch "+syncKey(p, t), n.goRun, func() {
		if err := n.fetchFrom(n.ctx, p, t); err != nil && n.ctx.Err() == nil {
			n.log.Debug("attachment fetch failed", "peer", p.ShortString(), "team", t.id, "err", err)
		}
	})
}

// fetchFrom pulls from p the chunks this device lacks of t's messages that it should fetch now.
func (n *Node) fetchFrom(ctx context.Context, p peer.ID, t *team) error {
	if n.isBanned(p) || !n.maySync(t, n.corePeer(p, t)) {
		return nil
	}
	low, free := n.low.On(), n.freeLink(p)
	stored := 0
	defer func() {
		if stored > 0 {
			n.budgetSoon()
		}
	}()
	for _, m := range t.snapshot().Messages {
		if len(m.Attachments) == 0 || n.isComplete(m.ID) {
			continue
		}
		requested := n.isRequested(m.ID)
		evicted, err := n.st.Evicted(ownerKey(m.ID))
		if err != nil {
			return err
		}
		if !requested && (evicted || !attach.FetchNow(m.Priority, low, free)) {
			continue
		}
		wants, err := attach.Missing(m.Attachments, n.st.HasChunk)
		if err != nil {
			return err
		}
		if len(wants) == 0 {
			if evicted {
				if err := n.st.Unevict(ownerKey(m.ID)); err != nil {
					return err
				}
			}
			n.att.mu.Lock()
			if n.att.complete == nil {
				n.att.complete = make(map[crdt.OpID]bool)
			}
			n.att.complete[m.ID] = true
			n.att.mu.Unlock()
			continue
		}
		got, err := n.pull(ctx, p, m.ID, wants)
		stored += got
		if got > 0 {
			if got == len(wants) && evicted {
				if err := n.st.Unevict(ownerKey(m.ID)); err != nil {
					return err
				}
			}
			t.mu.Lock()
			t.wake()
			t.mu.Unlock()
		}
		if errors.Is(err, attach.ErrBadPeer) {
			n.ban(p, "it sent an attachment chunk that does not match its manifest")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pull runs one chunk session with p for the chunks of message owner.
func (n *Node) pull(ctx context.Context, p peer.ID, owner crdt.OpID, wants []attach.Want) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, chunkTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "fieldmesh-chunks"), p, ChunkProtocol)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	return attach.Pull(s, wants, chunkStore{st: n.st, owner: owner})
}

// chunkStore stores fetched chunks for one message.
type chunkStore struct {
	st    *storage.Store
	owner crdt.OpID
}

func (c chunkStore) PutChunk(addr [32]byte, sealed []byte) error {
	return c.st.PutChunk(c.owner, addr, sealed)
}

// handleChunks answers a peer's chunk requests, if it may sync one of this device's teams.
func (n *Node) handleChunks(s network.Stream) {
	p := s.Conn().RemotePeer()
	if n.isBanned(p) || !n.mayAskChunks(p) {
		_ = s.Reset()
		return
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(chunkTimeout))
	err := attach.Answer(s, func(addr [32]byte) ([]byte, error) {
		if chunkPace > 0 {
			time.Sleep(chunkPace)
		}
		c, err := n.st.Chunk(addr)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, nil
		}
		return c, err
	})
	switch {
	case errors.Is(err, attach.ErrBadPeer):
		n.ban(p, "it sent a malformed chunk request")
	case err != nil && n.ctx.Err() == nil:
		n.log.Debug("answering chunk requests", "peer", p.ShortString(), "err", err)
	}
}

func (n *Node) mayAskChunks(p peer.ID) bool {
	for _, t := range n.teamList() {
		if n.maySync(t, n.corePeer(p, t)) {
			return true
		}
	}
	return false
}

// freeLink reports whether every connection to p is over a LAN or loopback address: data that costs
// the user nothing.
func (n *Node) freeLink(p peer.ID) bool {
	conns := n.host.Network().ConnsToPeer(p)
	for _, c := range conns {
		a := c.RemoteMultiaddr()
		if !manet.IsPrivateAddr(a) && !manet.IsIPLoopback(a) {
			return false
		}
	}
	return len(conns) > 0
}

// dropChunks deletes the attachment chunks of messages whose bodies were deleted.
func (n *Node) dropChunks(owners []crdt.OpID) error {
	if len(owners) == 0 {
		return nil
	}
	ids := make([][storage.IDSize]byte, len(owners))
	for i, o := range owners {
		ids[i] = o
	}
	if _, err := n.st.DeleteChunksOf(ids); err != nil {
		return fmt.Errorf("node: deleting attachments: %w", err)
	}
	return nil
}

// pushToRelays leaves the chunks of t's messages at the connected relays enrolled for t.
func (n *Node) pushToRelays(t *team) {
	for _, p := range n.host.Network().Peers() {
		if n.isRelayFor(p, t.topic) {
			n.pushSoon(p, t)
		}
	}
}

// pushSoon pushes to relay p, on a goroutine, the chunks it may lack of t's messages (attach.Push):
// a relay cannot read the manifests, so it cannot pull them. One push per relay and team runs at a
// time, and a request that comes while one runs makes it run once more.
func (n *Node) pushSoon(p peer.ID, t *team) {
	n.att.jobs.soon("push "+syncKey(p, t), n.goRun, func() {
		if err := n.pushTo(n.ctx, p, t); err != nil && n.ctx.Err() == nil {
			n.log.Debug("leaving attachments at a relay failed", "relay", p.ShortString(), "team", t.id, "err", err)
		}
	})
}

// pushTo offers relay p the chunks of t's messages it is not known to hold. A message whose chunks
// p confirmed holding all of is recorded in the store (storage.Store.SetHeld) and not offered again,
// across restarts.
func (n *Node) pushTo(ctx context.Context, p peer.ID, t *team) error {
	offered := 0
	defer func() {
		n.log.Debug("offered attachments to a relay", "relay", p.ShortString(), "team", t.id, "messages", offered)
	}()
	for _, m := range t.snapshot().Messages {
		if len(m.Attachments) == 0 {
			continue
		}
		held, err := n.st.Held(ownerKey(m.ID), []byte(p))
		if err != nil || held {
			if err != nil {
				return err
			}
			continue
		}
		var addrs [][32]byte
		total := 0
		for _, a := range m.Attachments {
			total += len(a.Chunks)
			for _, c := range a.Chunks {
				ok, err := n.st.HasChunk(c)
				if err != nil {
					return err
				}
				if ok {
					addrs = append(addrs, c)
				}
			}
		}
		if len(addrs) == 0 {
			continue
		}
		offered++
		if err := n.pushOne(ctx, p, attach.Offer{Topic: t.topic, Owner: ownerKey(m.ID), Chunks: addrs}); err != nil {
			return err
		}
		if len(addrs) == total {
			if err := n.st.SetHeld(ownerKey(m.ID), []byte(p)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ownerKey is the store's owner key of message id's chunks.
func ownerKey(id crdt.OpID) [storage.IDSize]byte { return id }

func (n *Node) pushOne(ctx context.Context, p peer.ID, o attach.Offer) error {
	ctx, cancel := context.WithTimeout(ctx, chunkTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "fieldmesh-chunks"), p, protocol.ID(attach.PushProtocol))
	if err != nil {
		return err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	_, err = attach.Push(s, o, n.st.Chunk)
	return err
}
