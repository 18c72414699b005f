package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// Attachment chunks (sync/attach). A relay cannot read a message's manifests, so devices push the
// sealed chunks of an envelope to it (attach.PushProtocol: an offer names the topic, the envelope and
// the chunks' addresses; the relay takes those it lacks, each checked against its address), and it
// serves them by address (attach.Protocol) to the devices enrolled for their topic, which check them
// against the manifests they opened. Chunks are kept with their envelope:
//
//   - a device may push chunks only for an envelope the relay stores, of a topic it is enrolled for,
//     and at most maxEnvelopeChunkBytes for one envelope (every attachment a message can have);
//   - chunk bytes count against the envelope's topic share and the relay's quota, and an envelope
//     dropped for the quota or the retention period takes its chunks with it;
//   - a device that pushes a chunk other than the one it offered has its stream reset and the chunks
//     it pushed before stay; its later offers are answered as before (the relay penalises no one
//     beyond its per-peer write rate: it cannot tell a device's bug from malice).
//
// Keyspaces (store.go lists the others):
//
//	0x08 chunk        0x08 | address 32              -> topic 16 | sealed chunk
//	0x09 chunk owner  0x09 | envelope id 16 | address 32 -> topic 16 | size u32
const (
	pChunk      byte = 0x08
	pChunkOwner byte = 0x09
)

// maxEnvelopeChunkBytes bounds the chunk bytes one envelope may hold: the sealed chunks of every
// attachment of one message.
const maxEnvelopeChunkBytes = crdt.MaxMessageAttachmentBytes + crdt.MaxAttachments*crdt.MaxAttachmentChunks*crdt.ChunkOverhead

// chunkOverhead is what the quota counts for one stored chunk on top of its bytes: its two keys and
// values.
const chunkOverhead = 128

// errChunkRefused is a pushed chunk the relay does not take (no such envelope, another topic, over
// the envelope's limit).
var errChunkRefused = errors.New("relay: chunk refused")

func chunkKey(addr [32]byte) []byte { return append([]byte{pChunk}, addr[:]...) }

func chunkOwnerKey(owner crdt.OpID, addr [32]byte) []byte {
	b := append([]byte{pChunkOwner}, owner[:]...)
	return append(b, addr[:]...)
}

// putChunk stores a sealed chunk (checked against addr by the caller) for the stored envelope owner
// of topic t, durably. It reports whether it stored anything new.
func (s *store) putChunk(t envelope.Topic, owner crdt.OpID, addr [32]byte, sealed []byte) (bool, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	size := int64(len(sealed))
	err := s.db.Update(func(txn *badger.Txn) error {
		it, err := txn.Get(idKey(owner))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: no such envelope", errChunkRefused)
		}
		if err != nil {
			return err
		}
		idx, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		if len(idx) != 28 || envelope.Topic(idx[:16]) != t {
			return fmt.Errorf("%w: the envelope is of another topic", errChunkRefused)
		}
		if _, err := txn.Get(chunkOwnerKey(owner, addr)); err == nil {
			size = 0
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if s.ownerChunkBytes(owner)+int64(len(sealed)) > maxEnvelopeChunkBytes {
			return fmt.Errorf("%w: over %d bytes for one envelope", errChunkRefused, maxEnvelopeChunkBytes)
		}
		if _, err := txn.Get(chunkKey(addr)); errors.Is(err, badger.ErrKeyNotFound) {
			if err := txn.Set(chunkKey(addr), append(append(make([]byte, 0, 16+len(sealed)), t[:]...), sealed...)); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		v := binary.BigEndian.AppendUint32(append([]byte{}, t[:]...), uint32(len(sealed)))
		return txn.Set(chunkOwnerKey(owner, addr), v)
	})
	if err != nil || size == 0 {
		return false, err
	}
	s.addChunkBytes(t, owner, size)
	return true, nil
}

// chunk returns the sealed chunk at addr and its topic, or badger.ErrKeyNotFound.
func (s *store) chunk(addr [32]byte) (envelope.Topic, []byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(chunkKey(addr))
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if err != nil {
		return envelope.Topic{}, nil, err
	}
	if len(v) <= 16 {
		return envelope.Topic{}, nil, fmt.Errorf("relay: corrupt chunk %x", addr[:4])
	}
	return envelope.Topic(v[:16]), v[16:], nil
}

func (s *store) hasChunkFor(owner crdt.OpID, addr [32]byte) (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(chunkOwnerKey(owner, addr))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ownerChunkBytes returns the chunk bytes an envelope holds; the caller may hold wmu, not mu.
func (s *store) ownerChunkBytes(owner crdt.OpID) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owners[owner]
}

// addChunkBytes counts n chunk bytes (negative: dropped) for envelope owner of topic t.
func (s *store) addChunkBytes(t envelope.Topic, owner crdt.OpID, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owners == nil {
		s.owners = make(map[crdt.OpID]int64)
	}
	c := s.topics[t]
	if c == nil {
		c = &topicCount{}
		s.topics[t] = c
	}
	over := int64(chunkOverhead)
	if n < 0 {
		over = -over
	}
	c.bytes += n + over
	s.bytes += n + over
	s.owners[owner] += n + over
	if s.owners[owner] <= 0 {
		delete(s.owners, owner)
	}
}

// countChunks adds the stored chunks to the counters at open.
func (s *store) countChunks() error {
	return s.scan([]byte{pChunkOwner}, func(k, v []byte) error {
		if len(k) != 1+idSize+32 || len(v) != 20 {
			return fmt.Errorf("relay: corrupt chunk owner entry %x", k)
		}
		s.addChunkBytes(envelope.Topic(v[:16]), crdt.OpID(k[1:1+idSize]), int64(binary.BigEndian.Uint32(v[16:])))
		return nil
	})
}

// dropChunksTxn deletes, in txn, the chunks of envelope owner, and returns their bytes as counted.
func dropChunksTxn(txn *badger.Txn, owner crdt.OpID) (int64, error) {
	o := badger.DefaultIteratorOptions
	o.Prefix = append([]byte{pChunkOwner}, owner[:]...)
	it := txn.NewIterator(o)
	var keys [][]byte
	var n int64
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		v, err := it.Item().ValueCopy(nil)
		if err != nil || len(k) != 1+idSize+32 || len(v) != 20 {
			it.Close()
			return 0, fmt.Errorf("relay: corrupt chunk owner entry %x", k)
		}
		keys = append(keys, k, chunkKey([32]byte(k[1+idSize:])))
		n += int64(binary.BigEndian.Uint32(v[16:])) + chunkOverhead
	}
	it.Close()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// handleChunks answers chunk requests (attach.Answer) from a device, with the chunks of the topics it
// is enrolled for.
func (r *Relay) handleChunks(s network.Stream) {
	p := s.Conn().RemotePeer()
	if !r.enrolledAny(p) {
		_ = s.Reset()
		return
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	err := attach.Answer(s, func(addr [32]byte) ([]byte, error) {
		t, c, err := r.st.chunk(addr)
		if errors.Is(err, badger.ErrKeyNotFound) || (err == nil && !r.enrolledFor(p, t)) {
			return nil, nil
		}
		return c, err
	})
	if err != nil {
		r.log.Debug("answering chunk requests failed", "peer", p.ShortString(), "err", err)
		_ = s.Reset()
	}
}

// handlePush takes the chunks a device pushes for an envelope of a topic it is enrolled for.
func (r *Relay) handlePush(s network.Stream) {
	p := s.Conn().RemotePeer()
	if !r.enrolledAny(p) {
		_ = s.Reset()
		return
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	took := 0
	var topic envelope.Topic
	_, err := attach.Take(s, func(o attach.Offer) ([]bool, error) {
		t := envelope.Topic(o.Topic)
		topic = t
		if !r.carries(t) || !r.enrolledFor(p, t) {
			return nil, fmt.Errorf("%w: not enrolled for the topic", errChunkRefused)
		}
		if ok, err := r.st.has(o.Owner); err != nil || !ok {
			return nil, fmt.Errorf("%w: no such envelope", errChunkRefused)
		}
		want := make([]bool, len(o.Chunks))
		for i, c := range o.Chunks {
			has, err := r.st.hasChunkFor(o.Owner, c)
			if err != nil {
				return nil, err
			}
			want[i] = !has
		}
		return want, nil
	}, func(o attach.Offer, addr [32]byte, sealed []byte) error {
		if !r.writer(p).AllowN(r.now(), 1) {
			r.m.refused.WithLabelValues("rate").Inc()
			return fmt.Errorf("%w: over the device's write rate", errChunkRefused)
		}
		added, err := r.st.putChunk(envelope.Topic(o.Topic), o.Owner, addr, sealed)
		if added {
			took++
		}
		return err
	})
	if took > 0 {
		r.log.Debug("relay stored chunks", "topic", topic, "chunks", took, "peer", p.ShortString())
		if qerr := r.enforceQuota([]record{{Topic: topic}}); qerr != nil {
			r.log.Error("quota after chunks failed", "err", qerr)
		}
	}
	switch {
	case errors.Is(err, attach.ErrBadPeer):
		r.log.Warn("refused chunks that do not match their offer", "peer", p.ShortString())
		_ = s.Reset()
	case err != nil:
		r.log.Debug("chunk push refused", "peer", p.ShortString(), "err", err)
		_ = s.Reset()
	}
}

// enrolledAny reports whether p is enrolled for any topic.
func (r *Relay) enrolledAny(p peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.enrolled[p]) > 0
}

// registerChunks adds the chunk protocols' handlers.
func (r *Relay) registerChunks() {
	r.host.SetStreamHandler(protocol.ID(attach.Protocol), r.handleChunks)
	r.host.SetStreamHandler(protocol.ID(attach.PushProtocol), r.handlePush)
}

// dropChunkBytes uncounts n chunk bytes (overheads included) of envelope owner of topic t.
func (s *store) dropChunkBytes(t envelope.Topic, owner crdt.OpID, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.topics[t]; c != nil {
		c.bytes -= n
	}
	s.bytes -= n
	delete(s.owners, owner)
}
