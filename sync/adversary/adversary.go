// Package adversary builds what an attacker sends, for the tests that attack the device core and the
// node: envelopes a member, a removed member or an outsider can make with its own keys and what it
// was given (an epoch key it holds, a genuine op it saw), laid out exactly as sync/envelope lays them
// out, but with the values the attacker chooses (another chain index, a borrowed signature, junk
// boxes, junk prior keys). Nothing in the product imports it.
package adversary

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/crypto/seal"
	"github.com/fieldmesh/fieldmesh/crypto/senderkey"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// ForgeChain builds a chain-form envelope of op's content at (tag, index) of op's author's sender
// chain, carrying sign(the inner hash) as the seal's signature, as a device that holds the epoch key
// can: every recipient of an epoch can derive every sender's chain. sign is [Borrow] of a signature
// the attacker saw (re-sealing: it signed another inner layer, or another position) or [SignAs] with
// a key it holds; either way the envelope must not open. slot is the sender's position in the epoch's
// recipient list (envelope version 6 on): the author's (Slot), or another the attacker chooses.
// Version 9: neither layer has a tag; both are ChaCha20 (from block 1) with the op id's first 12
// bytes as nonce, the inner under the message key, the outer under the outer key, and the signature
// covers the hash of the header (whose first byte holds the version, the form and whether the time
// has a counter), the slot and the inner ciphertext.
//
// The layout is written out here on purpose, apart from sync/envelope's, as an attacker would (the
// domain strings and the inner-hash recipe included): TestForgeChainLayout checks that with the
// genuine signature at the genuine position it builds byte for byte what envelope.SealChain seals,
// so the two cannot drift apart unnoticed.
func ForgeChain(op *crdt.Op, tag uint32, slot int, index uint32, sign func(crdt.InnerHash) []byte, key seal.EpochKey) []byte {
	s := senderkey.NewSender(key, op.Author)
	var nz [senderkey.NonceSize]byte
	for range index {
		_, _, _ = s.SealStream(nz, nil)
	}
	id := op.ID()
	nonce := [senderkey.NonceSize]byte(id[:senderkey.NonceSize])
	// The header: version 9 and the chain form (1), bit 2 if the time has a counter; the tag, the id,
	// the time's millisecond in 6 bytes, then its counter as a uvarint if it is not 0.
	first, counter := byte(9<<4|1), uint64(op.Time&0xffff)
	if counter != 0 {
		first |= 1 << 2
	}
	hdr := binary.BigEndian.AppendUint32([]byte{first}, tag)
	hdr = append(hdr, id[:]...)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(op.Time>>16))
	hdr = append(hdr[:len(hdr)-8], hdr[len(hdr)-6:]...)
	if counter != 0 {
		hdr = binary.AppendUvarint(hdr, counter)
	}
	// The inner hash starts with the topic, which the wire does not carry.
	topic := envelope.TopicOf(op.Team)
	bound := append(slices.Clone(topic[:]), hdr...)
	_, body, _ := s.SealStream(nonce, op.MarshalCompact())
	h := sha256.New()
	h.Write([]byte("fieldmesh/v9/envelope/inner"))
	h.Write(bound)
	h.Write(binary.AppendUvarint(nil, uint64(slot)))
	h.Write(body)
	inner := crdt.InnerHash(h.Sum(nil)[:crdt.InnerHashSize])
	plain := append(binary.AppendUvarint(binary.AppendUvarint(nil, uint64(slot)), uint64(index)), sign(inner)...)
	plain = append(plain, body...)
	outer := make([]byte, len(plain))
	seal.Stream(envelope.OuterKey(key), [seal.NonceSize]byte(id[:seal.NonceSize]), outer, plain)
	return append(hdr, outer...)
}

// Borrow returns a signer for ForgeChain that gives sig whatever the inner hash: a signature the
// attacker saw on a genuine envelope.
func Borrow(sig []byte) func(crdt.InnerHash) []byte {
	return func(crdt.InnerHash) []byte { return bytes.Clone(sig) }
}

// SignAs returns a signer for ForgeChain that signs with dev, for author, the seal of op id at (tag,
// index) in team with the forged envelope's inner hash: a forgery when dev is not author, an
// equivocation when it is.
func SignAs(dev *identity.Device, team crdt.TeamID, tag uint32, author identity.DeviceID, index uint32, id crdt.OpID) func(crdt.InnerHash) []byte {
	return func(inner crdt.InnerHash) []byte {
		return dev.Sign(crdt.SignedBytes(team, tag, author, index, id, inner))
	}
}

// Slot returns d's slot in the recipient list of the first epoch of tag that s lists it in (the
// slot a chain envelope of d in that epoch names), or 0 if none does.
func Slot(s *crdt.State, tag uint32, d identity.DeviceID) int {
	for _, ep := range s.Epoch(tag) {
		if i := slices.IndexFunc(ep.Recipients, func(r crdt.Recipient) bool { return r.Device == d }); i >= 0 {
			return i
		}
	}
	return 0
}

// Commit seals commit op by dev in commit form, for recipients (a zero Noise key is replaced by a
// fresh one, so that junk recipients cost a box each), handing on prior (junk or genuine).
func Commit(dev *identity.Device, op *crdt.Op, recips []crdt.Recipient, prior []envelope.PriorKey, rand io.Reader) ([]byte, error) {
	key, err := seal.NewEpochKey(rand)
	if err != nil {
		return nil, err
	}
	noise := make([]identity.NoisePublic, 0, len(recips))
	for _, r := range recips {
		if r.Noise == (identity.NoisePublic{}) {
			d, err := identity.Generate(rand)
			if err != nil {
				return nil, err
			}
			r.Noise = d.NoisePublic()
		}
		noise = append(noise, r.Noise)
	}
	e, err := envelope.SealCommit(op, dev, key, noise, prior, rand)
	if err != nil {
		return nil, fmt.Errorf("adversary: %w", err)
	}
	return e.Marshal(), nil
}

// JunkCommit returns a commit-form envelope of team signed by dev, dated t, whose boxes are for boxes
// random devices: no device of the team can open any of them, and each costs a trying device one
// X25519 multiplication.
func JunkCommit(dev *identity.Device, team crdt.TeamID, t crdt.HLC, boxes int, rand io.Reader) ([]byte, error) {
	recips := make([]crdt.Recipient, 0, boxes)
	for range boxes {
		d, err := identity.Generate(rand)
		if err != nil {
			return nil, err
		}
		recips = append(recips, crdt.Recipient{Device: d.ID(), Noise: d.NoisePublic()})
	}
	slices.SortFunc(recips, func(a, b crdt.Recipient) int { return bytes.Compare(a.Device[:], b.Device[:]) })
	c := crdt.Commit{Number: 99, Recipients: recips}
	op := crdt.NewOp(dev, team, t, nil, crdt.KindMember, c.Marshal())
	return Commit(dev, op, recips, nil, rand)
}

// JunkPrior returns n prior keys of random tags and keys.
func JunkPrior(n int, rand io.Reader) ([]envelope.PriorKey, error) {
	out := make([]envelope.PriorKey, 0, n)
	for i := range n {
		k, err := seal.NewEpochKey(rand)
		if err != nil {
			return nil, err
		}
		out = append(out, envelope.PriorKey{Tag: uint32(i*7919 + 1), Outer: k})
	}
	return out, nil
}
