package teamkeys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

const (
	stateVersion = 5

	flagCommit = 1 << 0 // the commit id follows
	flagChains = 1 << 1 // the sender state and receiver states follow

	senderStateSize = 70 // senderkey's SenderState encoding
	minReceiverSize = 72 // senderkey's ReceiverState encoding with no skipped keys

	maxEpochSize = 4 + 1 + crdt.IDSize + seal.KeySize + max(senderStateSize+binary.MaxVarintLen16+
		envelope.MaxBoxes*(binary.MaxVarintLen32+senderkey.MaxReceiverSize), binary.MaxVarintLen16+envelope.MaxBoxes*32)

	// MaxStateSize is the largest encoding Unmarshal accepts (bytes): the
	// most epochs, each with the most receivers, each with the most skipped
	// keys, and the most forgotten tags. It is a bound, not a size to
	// expect: a 30-device team with weekly epochs over a year is about
	// 120 KB. Unmarshal reads sequentially and allocates only as it
	// consumes input.
	MaxStateSize int64 = 1 + 32 + 32 + binary.MaxVarintLen16 + MaxEpochs*maxEpochSize +
		binary.MaxVarintLen32 + MaxForgotten*4 + 1 + MaxPrekeys*(33+binary.MaxVarintLen16+MaxEpochs*4)
)

// Marshal encodes the whole state (version 5), for one record of the
// encrypted store; integers big-endian, uvarints minimal:
//
//	version     1 byte   (5)
//	team       32 bytes
//	device     32 bytes  this device's id
//	epochs     uvarint count (0..MaxEpochs), then each, strictly ascending by
//	           (tag, commit id or zeros, outer key):
//	  tag        4 bytes
//	  flags      1 byte   bit 0: commit id follows; bit 1: chains follow; no other bit
//	  [commit   16 bytes]
//	  outer     32 bytes  the outer key
//	  [chains:  sender state (70 bytes, crypto/senderkey);
//	            uvarint count (0..MaxBoxes-1) of receiver states, ascending by sender,
//	            each as uvarint length and crypto/senderkey's encoding]
//	  [list:    with a commit id and no chains: the epoch's recipient list,
//	            uvarint count (1..MaxBoxes), device ids 32 bytes each, strictly
//	            ascending; with chains the list is this device and the senders
//	            of the receiver states, ascending, and is not written]
//	forgotten  uvarint count (0..MaxForgotten), then each tag 4 bytes, ascending
//	prekeys    uvarint count (0..MaxPrekeys), then each in the order made:
//	           private key 32 bytes, used byte (0 or 1), uvarint count
//	           (0..MaxEpochs) of the tags of held epochs it opened, each 4
//	           bytes, strictly ascending; no two prekeys alike
//
// Each state has exactly one encoding. The result holds secrets (outer
// keys, chain keys); the store encrypts it at rest. Persist it after every
// Seal and SealCommit before the envelope leaves the device, and after
// every Consume and Learn.
func (k *Keys) Marshal() []byte {
	b := make([]byte, 0, 128+k.Len()*256)
	b = append(b, stateVersion)
	b = append(b, k.team[:]...)
	me := k.self.ID()
	b = append(b, me[:]...)
	b = binary.AppendUvarint(b, uint64(k.Len()))
	for _, tag := range k.Tags() {
		for _, ep := range k.epochs[tag] {
			b = ep.append(b)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(k.forgotten)))
	for _, tag := range slices.Sorted(maps.Keys(k.forgotten)) {
		b = binary.BigEndian.AppendUint32(b, tag)
	}
	b = binary.AppendUvarint(b, uint64(len(k.prekeys)))
	for _, h := range k.prekeys {
		b = append(b, h.key.Private[:]...)
		b = wire.AppendBool(b, h.used)
		b = binary.AppendUvarint(b, uint64(len(h.opened)))
		for _, tag := range h.opened {
			b = binary.BigEndian.AppendUint32(b, tag)
		}
	}
	return b
}

// append encodes one epoch (see Marshal).
func (ep *Epoch) append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, ep.tag)
	var flags byte
	if ep.commit != (crdt.OpID{}) {
		flags |= flagCommit
	}
	if ep.Chains() {
		flags |= flagChains
	}
	b = append(b, flags)
	if flags&flagCommit != 0 {
		b = append(b, ep.commit[:]...)
	}
	raw := ep.outer.Bytes()
	b = append(b, raw...)
	clear(raw)
	if !ep.Chains() {
		if flags&flagCommit != 0 {
			b = binary.AppendUvarint(b, uint64(len(ep.list)))
			for _, d := range ep.list {
				b = append(b, d[:]...)
			}
		}
		return b
	}
	s, _ := ep.send.MarshalBinary()
	b = append(b, s...)
	clear(s)
	b = binary.AppendUvarint(b, uint64(len(ep.recv)))
	for _, d := range slices.SortedFunc(maps.Keys(ep.recv), compareDevice) {
		r, _ := ep.recv[d].MarshalBinary()
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
		clear(r)
	}
	return b
}

func compareDevice(a, b identity.DeviceID) int { return bytes.Compare(a[:], b[:]) }

// Unmarshal decodes the output of Marshal for team on device self. It
// refuses input over MaxStateSize before reading it, another team or
// device, unknown versions and flags, non-minimal uvarints, counts over
// their limits or over what the input holds, lists out of order, chain
// states of another device than the one listed, trailing bytes, and
// everything crypto/senderkey's decoders refuse. It never panics (fuzzed)
// and the result does not alias b.
func Unmarshal(team crdt.TeamID, self *identity.Device, b []byte) (*Keys, error) {
	if int64(len(b)) > MaxStateSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrEncoding, len(b), MaxStateSize)
	}
	d := wire.NewReader(b)
	if v := d.Byte(); d.Err() == nil && v != stateVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrEncoding, v)
	}
	if t := d.Fixed(32); d.Err() == nil && !bytes.Equal(t, team[:]) {
		return nil, fmt.Errorf("%w: the state of another team", ErrEncoding)
	}
	me := self.ID()
	if dev := d.Fixed(32); d.Err() == nil && !bytes.Equal(dev, me[:]) {
		return nil, fmt.Errorf("%w: the state of another device", ErrEncoding)
	}
	k := New(team, self)
	n := d.Count(MaxEpochs, 4+1+seal.KeySize)
	var prev *Epoch
	for range n {
		tag := d.Uint32()
		ep := &Epoch{tag: tag}
		flags := d.Byte()
		if d.Err() == nil && flags&^(flagCommit|flagChains) != 0 {
			fail(d, "unknown epoch flags %#x", flags)
		}
		if flags&flagCommit != 0 {
			copy(ep.commit[:], d.Fixed(crdt.IDSize))
			if d.Err() == nil && ep.commit == (crdt.OpID{}) {
				fail(d, "zero commit id") // Marshal writes none then
			}
		}
		ep.outer, _ = seal.EpochKeyFromBytes(d.Fixed(seal.KeySize))
		if d.Err() == nil && flags&flagCommit != 0 && crdt.TagOf(ep.commit) != tag {
			fail(d, "a commit id of another tag")
		}
		switch {
		case flags&flagChains != 0:
			if flags&flagCommit == 0 {
				fail(d, "chains without a commit id")
			}
			readChains(d, ep, me)
			if d.Err() == nil {
				ep.list = slices.SortedFunc(maps.Keys(ep.recv), compareDevice)
				ep.list = slices.Insert(ep.list, slotOf(ep.list, me), me)
			}
		case flags&flagCommit != 0:
			readList(d, ep)
		}
		if d.Err() == nil && prev != nil && compareEpochs(prev, ep) >= 0 {
			fail(d, "epochs not strictly ascending")
		}
		if d.Err() != nil {
			return nil, encodingError(d.Err())
		}
		k.epochs[tag] = append(k.epochs[tag], ep)
		prev = ep
	}
	m := d.Count(MaxForgotten, 4)
	prevTag := int64(-1)
	for range m {
		tag := d.Uint32()
		if d.Err() == nil && int64(tag) <= prevTag {
			fail(d, "forgotten tags not strictly ascending")
		}
		prevTag = int64(tag)
		if d.Err() == nil && k.Held(tag) {
			fail(d, "a forgotten tag is held")
		}
		k.forgotten[tag] = struct{}{}
	}
	np := d.Count(MaxPrekeys, 34)
	for range np {
		var priv [32]byte
		copy(priv[:], d.Fixed(32))
		used := d.Bool()
		nt := d.Count(MaxEpochs, 4)
		var opened []uint32
		for range nt {
			tag := d.Uint32()
			if d.Err() == nil && len(opened) > 0 && tag <= opened[len(opened)-1] {
				fail(d, "prekey epoch tags not strictly ascending")
			}
			opened = append(opened, tag)
		}
		if d.Err() == nil && len(opened) > 0 && !used {
			fail(d, "an unused prekey that opened epochs")
		}
		if d.Err() != nil {
			break
		}
		p, err := epochkey.PrekeyFromPrivate(priv)
		clear(priv[:])
		if err != nil {
			fail(d, "%v", err)
			break
		}
		if slices.ContainsFunc(k.prekeys, func(h *heldPrekey) bool { return h.key.Public == p.Public }) {
			fail(d, "a prekey twice")
			break
		}
		k.prekeys = append(k.prekeys, &heldPrekey{key: p, used: used, opened: opened})
	}
	if err := d.Finish(); err != nil {
		return nil, encodingError(err)
	}
	return k, nil
}

// fail records a check of this package as d's error (the first error sticks).
func fail(d *wire.Reader, format string, args ...any) {
	d.Fail(fmt.Errorf("%w: "+format, append([]any{ErrEncoding}, args...)...))
}

// encodingError returns err wrapping ErrEncoding: a check of this package
// (fail) already does, an error of sync/wire gets it added.
func encodingError(err error) error {
	if errors.Is(err, ErrEncoding) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrEncoding, err)
}

// readList reads the recipient list of an epoch held without chains.
func readList(d *wire.Reader, ep *Epoch) {
	n := d.Count(envelope.MaxBoxes, 32)
	if d.Err() == nil && n == 0 {
		fail(d, "an empty recipient list")
	}
	for range n {
		dev := identity.DeviceID(d.Fixed(32))
		if d.Err() != nil {
			return
		}
		if len(ep.list) > 0 && compareDevice(ep.list[len(ep.list)-1], dev) >= 0 {
			fail(d, "recipient list not strictly ascending")
			return
		}
		ep.list = append(ep.list, dev)
	}
}

// slotOf returns where d goes in the ascending list.
func slotOf(list []identity.DeviceID, d identity.DeviceID) int {
	i, _ := slices.BinarySearchFunc(list, d, compareDevice)
	return i
}

// readChains reads the sender and receiver states of an epoch of device me.
func readChains(d *wire.Reader, ep *Epoch, me identity.DeviceID) {
	s, err := senderkey.UnmarshalSender(d.Fixed(senderStateSize))
	if d.Err() != nil {
		return
	}
	if err != nil {
		fail(d, "%v", err)
		return
	}
	if s.Sender() != me {
		fail(d, "a sender state of another device")
		return
	}
	ep.send = s
	n := d.Count(envelope.MaxBoxes-1, 1+minReceiverSize) // 0 for a device alone in its epoch
	ep.recv = make(map[identity.DeviceID]*senderkey.ReceiverState, n)
	var prev *identity.DeviceID
	for range n {
		raw := d.Bytes(senderkey.MaxReceiverSize)
		if d.Err() != nil {
			return
		}
		r, err := senderkey.UnmarshalReceiver(raw)
		if err != nil {
			fail(d, "%v", err)
			return
		}
		who := r.Sender()
		switch {
		case who == me:
			fail(d, "a receiver state of this device")
		case prev != nil && compareDevice(*prev, who) >= 0:
			fail(d, "receiver states not strictly ascending by sender")
		}
		if d.Err() != nil {
			return
		}
		ep.recv[who] = r
		prev = &who
	}
}
