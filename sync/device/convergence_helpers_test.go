package device

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/recon"
	"github.com/fieldmesh/fieldmesh/sync/teamkeys"
)

// This file holds what the tests of Reconcile and TestConvergence share:
// recon.Sources over a memStore and over a fixed list of envelopes, the
// Stored a node's store gives New, and garbage that looks like envelopes.

var errNoEnvelope = errors.New("test store: no such envelope")

// storeSource is the recon.Source of a memStore: what a node's store
// offers a reconciliation.
type storeSource struct{ s *memStore }

func (src storeSource) Items() ([]recon.Item, error) {
	items := make([]recon.Item, 0, len(src.s.envs))
	for id, r := range src.s.envs {
		items = append(items, recon.Item{Time: r.Time, ID: id})
	}
	slices.SortFunc(items, compareReconItems)
	return items, nil
}

func (src storeSource) Envelope(id [recon.IDSize]byte) ([]byte, error) {
	r, ok := src.s.envs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %x", errNoEnvelope, id[:4])
	}
	return r.Data, nil
}

func compareReconItems(a, b recon.Item) int {
	return cmp.Or(cmp.Compare(a.Time, b.Time), bytes.Compare(a.ID[:], b.ID[:]))
}

// listSource is a recon.Source over a fixed list of envelopes, which need
// not decode: what a peer that sends garbage offers.
type listSource struct {
	items []recon.Item
	raws  map[[recon.IDSize]byte][]byte
}

func (l *listSource) add(t uint64, id [recon.IDSize]byte, raw []byte) {
	if l.raws == nil {
		l.raws = make(map[[recon.IDSize]byte][]byte)
	}
	if _, dup := l.raws[id]; dup {
		return
	}
	l.items = append(l.items, recon.Item{Time: t, ID: id})
	slices.SortFunc(l.items, compareReconItems)
	l.raws[id] = raw
}

func (l *listSource) Items() ([]recon.Item, error) { return l.items, nil }

func (l *listSource) Envelope(id [recon.IDSize]byte) ([]byte, error) {
	raw, ok := l.raws[id]
	if !ok {
		return nil, fmt.Errorf("%w: %x", errNoEnvelope, id[:4])
	}
	return raw, nil
}

// sideOf is d as one side of a Reconcile at time now: its store is its
// memStore, its effects are applied to it, and what they ask to reopen is
// given to its Team again.
func sideOf(d *hdev, now time.Time) Side {
	var apply func(Effects) error
	apply = func(eff Effects) error {
		d.apply(eff)
		if len(eff.Reopen) == 0 {
			return nil
		}
		_, more := d.team.Receive(now, reopened(d.store, eff.Reopen))
		return apply(more)
	}
	return Side{Team: d.team, Store: storeSource{d.store}, Apply: apply, Peer: d.peer(), Now: now}
}

// reopened returns the arrivals that give the stored envelopes ids, which
// an Effects.Reopen named, to Receive again.
func reopened(s *memStore, ids []crdt.OpID) []Arrival {
	out := make([]Arrival, 0, len(ids))
	for _, id := range ids {
		if r, ok := s.envs[id]; ok {
			out = append(out, Arrival{Raw: r.Data, Reopen: true})
		}
	}
	return out
}

// badSignature returns a chain-form envelope raw, sealed under the epoch
// with key, re-sealed with two bits of its sender's signature flipped (bit
// and the one 32 bytes further on): what only a member holding the epoch
// key can make, and no honest peer passes on. Two bits, because the
// attack's mangled frames flip at most one: with one, a mangled frame
// could flip it back and hand the victim the genuine envelope, which it
// rightly accepts (CI, schedule 1796658482631352817 at 6514fc7). It
// reports false if raw is not such an envelope.
func badSignature(topic envelope.Topic, raw []byte, key seal.EpochKey, bit int) ([]byte, bool) {
	const sigSize = 64
	e, err := envelope.Unmarshal(topic, raw)
	if err != nil || e.Form() != envelope.FormChain {
		return nil, false
	}
	hdr := raw[:e.HeaderLen()]
	// The outer layer (format 9): ChaCha20 under the outer key, the op id's first 12 bytes as nonce,
	// no Poly1305 tag.
	outer := envelope.OuterKey(key)
	nonce := [seal.NonceSize]byte(e.ID[:seal.NonceSize])
	plain := make([]byte, len(e.Ciphertext)-1)
	seal.Stream(outer, nonce, plain, e.Ciphertext[1:])
	_, n1 := binary.Uvarint(plain)
	if n1 <= 0 {
		return nil, false
	}
	_, n2 := binary.Uvarint(plain[n1:])
	sigAt := n1 + n2 // sender slot and index (uvarints), then the signature
	if n2 <= 0 || len(plain) < sigAt+sigSize {
		return nil, false
	}
	plain[sigAt+bit/8%sigSize] ^= 1 << (bit % 8)
	plain[sigAt+(bit/8+sigSize/2)%sigSize] ^= 1 << (bit % 8)
	ct := make([]byte, len(plain))
	seal.Stream(outer, nonce, ct, plain)
	out := append(bytes.Clone(hdr), ct...)
	return out, true
}

// Kinds of garbage a member device sends, and what the core makes of each
// (TestReconcileGarbage checks the verdicts, and says where they vary).
const (
	garbageBytes      = "random bytes"               // Rejected: malformed
	garbageCiphertext = "random ciphertext"          // Rejected: fails the signature under an epoch the receiver holds with chains
	garbageTampered   = "tampered"                   // Rejected: a stored envelope, a bit flipped, under a new id
	garbageSignature  = "bad signature"              // Rejected: sealed by the member, its signature flipped
	garbageTopic      = "another topic"              // Held: the wire names no topic, so another team's envelope is one of an unknown epoch
	garbageBody       = "bad body"                   // Refused: its author sealed a body that does not decode
	garbageOutsider   = "outsider with the team key" // Rejected: sealed by a device that is not a recipient, at a member's slot
	garbageEpoch      = "unknown epoch"              // Held: sealed under a key nobody in the team holds
	garbageParents    = "impossible parents"         // Held: a valid message not after its parents counts for nothing
)

var garbageKinds = []string{garbageBytes, garbageCiphertext, garbageTampered, garbageSignature, garbageTopic, garbageBody, garbageOutsider, garbageEpoch, garbageParents}

// garbageMaker makes garbage envelopes as member device g of a team can:
// with g's key state (it seals valid-looking garbage on g's own sender
// chain, which advances as if g had sent it, so that g's later messages
// never share a position with it), g's store and an outsider's identity.
type garbageMaker struct {
	g        *Team
	store    *memStore // g's store: its keys are updated when the chain advances
	outsider *identity.Device
	rng      *rand.Rand
	keys     map[crdt.OpID]seal.EpochKey // epoch keys opened from g's boxes, by commit
}

// reader returns a deterministic reader drawn from the maker's rng.
func (m *garbageMaker) reader() io.Reader {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(m.rng.Uint32())
	}
	return rand.NewChaCha8(seed)
}

func (m *garbageMaker) randomID() (id crdt.OpID) {
	for i := range id {
		id[i] = byte(m.rng.Uint32())
	}
	return id
}

func (m *garbageMaker) randomTeam() (t crdt.TeamID) {
	for i := range t {
		t[i] = byte(m.rng.Uint32())
	}
	return t
}

// epoch returns the commit of g's current epoch and its key, from g's box
// in the commit's stored envelope.
func (m *garbageMaker) epoch() (crdt.OpID, seal.EpochKey, bool) {
	s := m.g.snapshot()
	if s.Current < 0 {
		return crdt.OpID{}, seal.EpochKey{}, false
	}
	cur := s.Epochs[s.Current].ID
	if k, ok := m.keys[cur]; ok {
		return cur, k, true
	}
	r, ok := m.store.envs[cur]
	if !ok {
		return cur, seal.EpochKey{}, false
	}
	e, err := envelope.Unmarshal(m.g.topic, r.Data)
	if err != nil {
		return cur, seal.EpochKey{}, false
	}
	box, err := teamkeys.OpenBox(m.g.BoxKeys(), m.g.id, e)
	if err != nil {
		return cur, seal.EpochKey{}, false
	}
	if m.keys == nil {
		m.keys = make(map[crdt.OpID]seal.EpochKey)
	}
	m.keys[cur] = box.Key
	return cur, box.Key, true
}

// sealOwn seals op, by g, on g's chain of its current epoch, and stores
// the advanced key state as g's node would.
func (m *garbageMaker) sealOwn(op *crdt.Op) ([]byte, bool) {
	cur, _, _ := m.epoch()
	if !m.g.keys.CanSend(cur) {
		return nil, false
	}
	e, _, err := m.g.keys.Seal(op, cur)
	if err != nil {
		return nil, false
	}
	m.store.keys = m.g.keys.Marshal()
	return e.Marshal(), true
}

// make returns one garbage envelope of the kind, stamped at, whose parents
// are victim's heads: its item time, id and bytes. It reports false when
// g cannot make that kind now (it holds no key of its current epoch, or no
// chain-form envelope to tamper with).
func (m *garbageMaker) make(kind string, victim *Team, at time.Time) (uint64, crdt.OpID, []byte, bool) {
	ts := crdt.MakeHLC(at, uint16(m.rng.IntN(1000)))
	team := m.g.id
	text := crdt.Message{Text: "garbage"}.Marshal()
	message := func(author *identity.Device, t crdt.HLC, parents []crdt.OpID, kind crdt.Kind, body []byte) *crdt.Op {
		return crdt.NewOp(author, team, t, parents, kind, body)
	}
	heads := victim.lg.Heads()
	switch kind {
	case garbageBytes:
		raw := make([]byte, m.rng.IntN(300))
		_, _ = io.ReadFull(m.reader(), raw)
		return uint64(ts), m.randomID(), raw, true
	case garbageCiphertext:
		cur, _, ok := m.epoch()
		if !ok {
			return 0, crdt.OpID{}, nil, false
		}
		e := &envelope.Envelope{Topic: m.g.topic, Epoch: crdt.TagOf(cur), ID: m.randomID(), Time: ts, Ciphertext: make([]byte, envelope.ChainOverhead+m.rng.IntN(200))}
		_, _ = io.ReadFull(m.reader(), e.Ciphertext)
		e.Ciphertext[0] = byte(envelope.FormChain)
		return uint64(ts), e.ID, e.Marshal(), true
	case garbageTampered:
		var chain []*envelope.Envelope
		for _, r := range m.store.envs {
			if e, err := envelope.Unmarshal(m.g.topic, r.Data); err == nil && e.Form() == envelope.FormChain {
				chain = append(chain, e)
			}
		}
		if len(chain) == 0 {
			return 0, crdt.OpID{}, nil, false
		}
		slices.SortFunc(chain, func(a, b *envelope.Envelope) int { return bytes.Compare(a.ID[:], b.ID[:]) })
		e := chain[m.rng.IntN(len(chain))]
		e.Ciphertext = bytes.Clone(e.Ciphertext)
		e.Ciphertext[1+m.rng.IntN(len(e.Ciphertext)-1)] ^= 1 << m.rng.IntN(8)
		e.ID = m.randomID()
		return uint64(e.Time), e.ID, e.Marshal(), true
	case garbageSignature:
		_, key, ok := m.epoch()
		if !ok {
			return 0, crdt.OpID{}, nil, false
		}
		op := message(m.g.self, ts, m.g.lg.HeadsBefore(ts), crdt.KindMessage, text)
		raw, ok := m.sealOwn(op)
		if !ok {
			return 0, crdt.OpID{}, nil, false
		}
		bad, ok := badSignature(m.g.topic, raw, key, m.rng.IntN(512))
		return uint64(ts), op.ID(), bad, ok
	case garbageTopic:
		key, _ := seal.NewEpochKey(m.reader())
		op := crdt.NewOp(m.g.self, m.randomTeam(), ts, nil, crdt.KindMessage, text)
		e, _, err := envelope.SealChain(op, m.g.self, m.rng.Uint32(), envelope.OuterKey(key), senderkey.NewSender(key, m.g.self.ID()), 0)
		if err != nil {
			return 0, crdt.OpID{}, nil, false
		}
		return uint64(ts), e.ID, e.Marshal(), true
	case garbageBody:
		op := message(m.g.self, ts, m.g.lg.HeadsBefore(ts), crdt.KindAck, []byte{1, 9})
		raw, ok := m.sealOwn(op)
		return uint64(ts), op.ID(), raw, ok
	case garbageOutsider, garbageEpoch:
		cur, key, ok := m.epoch()
		tag := crdt.TagOf(cur)
		if kind == garbageEpoch || !ok {
			key, _ = seal.NewEpochKey(m.reader())
			tag = m.rng.Uint32()
		}
		op := message(m.outsider, ts, heads, crdt.KindMessage, text)
		e, _, err := envelope.SealChain(op, m.outsider, tag, envelope.OuterKey(key), senderkey.NewSender(key, m.outsider.ID()), 0) // the outsider is at no slot: it claims the first
		if err != nil {
			return 0, crdt.OpID{}, nil, false
		}
		return uint64(ts), e.ID, e.Marshal(), true
	case garbageParents:
		if len(heads) == 0 {
			return 0, crdt.OpID{}, nil, false
		}
		latest := crdt.HLC(0)
		for _, id := range heads {
			if op, ok := victim.lg.Op(id); ok {
				latest = max(latest, op.Time)
			}
		}
		t := latest - min(latest, crdt.HLC(m.rng.IntN(2)<<m.rng.IntN(40))) // at or before a parent
		op := message(m.g.self, t, heads, crdt.KindMessage, text)
		raw, ok := m.sealOwn(op)
		return uint64(t), op.ID(), raw, ok
	}
	panic("unknown garbage kind " + kind)
}
