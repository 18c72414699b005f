package storage

import (
	"encoding/binary"
	"fmt"
)

// Keyspace prefixes: the first byte of every Badger key. Never renumber one;
// add new keyspaces with new bytes.
const (
	prefixMeta     byte = 0x00 // store metadata: "version" -> schemaVersion
	prefixSecret   byte = 0x01 // 0x01 | name                       -> opaque secret
	prefixEnvelope byte = 0x02 // 0x02 | topic 16 | time u64 BE | id 16 -> sealed envelope
	prefixEnvID    byte = 0x03 // 0x03 | id 16                      -> topic 16 | time u64 BE
	prefixTeam     byte = 0x04 // 0x04 | team id 32                 -> opaque team state
	prefixPeer     byte = 0x05 // 0x05 | peer key                   -> opaque peer blob
	prefixInvite   byte = 0x06 // 0x06 | invite id 16               -> opaque invite
	prefixUsage    byte = 0x10 // 0x10 | day | topic | protocol | peer -> byte counts (usage.go)
	prefixOutbox   byte = 0x11 // 0x11 | time u64 BE | id 16          -> queued op (usage.go)
	prefixSetting  byte = 0x12 // 0x12 | name                       -> opaque value (usage.go)
	prefixRecordQ  byte = 0x13 // 0x13 | team id 32 | op id 16        -> record gateway queue entry (recordq.go)
	prefixOp       byte = 0x20 // 0x20 | team id 32 | time u64 BE | id 16 -> opened op (ops.go)
	prefixCollect  byte = 0x30 // 0x30                             -> nothing; written and dropped by Collect (delete.go)

	prefixChunk      byte = 0x40 // 0x40 | address 32            -> sealed attachment chunk (chunks.go)
	prefixChunkOwner byte = 0x41 // 0x41 | owner 16 | address 32 -> nothing (chunks.go)
	prefixChunkIndex byte = 0x42 // 0x42 | address 32 | owner 16 -> nothing (chunks.go)
	prefixChunkHeld  byte = 0x43 // 0x43 | owner 16 | holder     -> nothing (chunks.go)
	prefixEvicted    byte = 0x44 // 0x44 | owner 16              -> nothing (chunks.go)
)

const (
	schemaVersion = 6 // 6: the envelopes stored are of format version 9 (the form and a variable time in the header; compact messages)

	// IDSize is the length of an envelope or op id (a crdt.OpID), in
	// bytes: what the keys of envelopes, ops, the outbox, the record queue
	// and chunk owners end with.
	IDSize = 16

	envKeyLen   = 1 + 16 + 8 + IDSize
	envIndexLen = 16 + 8

	// maxNameLen bounds secret names and peer keys (Badger allows 65000-byte
	// keys; ours are short names).
	maxNameLen = 1024
)

var metaVersionKey = []byte{prefixMeta, 'v', 'e', 'r', 's', 'i', 'o', 'n'}

func nameKey(prefix byte, name string) ([]byte, error) {
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("%w: name length %d not in [1, %d]", ErrBadKey, len(name), maxNameLen)
	}
	return append([]byte{prefix}, name...), nil
}

func idKey(prefix byte, id []byte) []byte {
	return append([]byte{prefix}, id...)
}

func envelopeKey(k EnvelopeKey) []byte {
	b := make([]byte, 0, envKeyLen)
	b = append(b, prefixEnvelope)
	b = append(b, k.Topic[:]...)
	b = binary.BigEndian.AppendUint64(b, k.Time)
	b = append(b, k.ID[:]...)
	return b
}

func topicPrefix(topic [16]byte) []byte {
	return append([]byte{prefixEnvelope}, topic[:]...)
}

// parseEnvelopeKey decodes an envelope key; ok is false if b is not one.
func parseEnvelopeKey(b []byte) (k EnvelopeKey, ok bool) {
	if len(b) != envKeyLen || b[0] != prefixEnvelope {
		return k, false
	}
	copy(k.Topic[:], b[1:17])
	k.Time = binary.BigEndian.Uint64(b[17:25])
	copy(k.ID[:], b[25:])
	return k, true
}

// envIndexValue is the value of an id index entry: where the envelope lives.
func envIndexValue(k EnvelopeKey) []byte {
	b := make([]byte, 0, envIndexLen)
	b = append(b, k.Topic[:]...)
	return binary.BigEndian.AppendUint64(b, k.Time)
}

func parseEnvIndexValue(id [IDSize]byte, v []byte) (EnvelopeKey, error) {
	if len(v) != envIndexLen {
		return EnvelopeKey{}, fmt.Errorf("%w: envelope index entry is %d bytes, want %d", ErrCorrupt, len(v), envIndexLen)
	}
	k := EnvelopeKey{ID: id, Time: binary.BigEndian.Uint64(v[16:])}
	copy(k.Topic[:], v[:16])
	return k, nil
}
