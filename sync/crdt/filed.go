package crdt

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Limits of a Filed body.
const (
	MaxFiledEntries = 128 // messages one filed op reports
	MaxRecordRefLen = 128 // bytes of one record reference
)

// FiledEntry says where one message was filed: the message's op id and
// the record's reference to the resource that holds it, a FHIR relative
// reference "Type/id" (for example "Communication/8f1c"): a resource type
// of 1 to 64 ASCII letters starting with a capital, a slash, and an id of
// 1 to 64 characters of A-Z a-z 0-9 '-' '.' (FHIR's id type).
type FiledEntry struct {
	Message OpID
	Ref     string
}

// Filed is the body of a filed op (KindFiled): a record gateway reports
// that the record server confirmed it holds these messages, at At. Every
// device deletes the bodies of the messages a filed op that counts names,
// a grace period after the op's Time (sync/device). Log.State says which
// filed ops count: those of a current admin's device, by the rule of
// messages (see State.Filed).
//
// Encoding: version 1 | at u64 big-endian (Unix milliseconds) | uvarint
// count (1..MaxFiledEntries) | count × (message id 16 bytes | ref (uvarint
// length 1..MaxRecordRefLen, bytes)), strictly ascending by message id.
type Filed struct {
	At      uint64 // when the record confirmed the filing, Unix milliseconds
	Entries []FiledEntry
}

// Time returns At as a time.Time.
func (f Filed) Time() time.Time { return time.UnixMilli(int64(f.At)).UTC() }

// ValidRecordRef reports whether ref is a FHIR relative reference "Type/id"
// as FiledEntry describes.
func ValidRecordRef(ref string) bool {
	slash := -1
	for i := 0; i < len(ref); i++ {
		if ref[i] == '/' {
			if slash >= 0 {
				return false
			}
			slash = i
		}
	}
	if slash < 1 || slash > 64 || len(ref)-slash-1 < 1 || len(ref)-slash-1 > 64 {
		return false
	}
	typ, id := ref[:slash], ref[slash+1:]
	if typ[0] < 'A' || typ[0] > 'Z' {
		return false
	}
	for i := 0; i < len(typ); i++ {
		c := typ[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Validate checks the limits that UnmarshalFiled enforces.
func (f Filed) Validate() error {
	switch {
	case len(f.Entries) == 0:
		return fmt.Errorf("%w: filed op of no messages", ErrInvalid)
	case len(f.Entries) > MaxFiledEntries:
		return fmt.Errorf("%w: filed op of %d messages, limit %d", ErrTooLarge, len(f.Entries), MaxFiledEntries)
	}
	for i, e := range f.Entries {
		if i > 0 && f.Entries[i-1].Message.Compare(e.Message) >= 0 {
			return fmt.Errorf("%w: filed messages not strictly ascending", ErrMalformed)
		}
		if !ValidRecordRef(e.Ref) {
			return fmt.Errorf("%w: record reference is not Type/id", ErrInvalid)
		}
	}
	return nil
}

// Marshal encodes f. It does not validate; call Validate first.
func (f Filed) Marshal() []byte {
	b := make([]byte, 0, 1+8+2+len(f.Entries)*(IDSize+1+MaxRecordRefLen))
	b = append(b, bodyVersion)
	b = binary.BigEndian.AppendUint64(b, f.At)
	b = binary.AppendUvarint(b, uint64(len(f.Entries)))
	for _, e := range f.Entries {
		b = append(b, e.Message[:]...)
		b = wire.AppendString(b, e.Ref)
	}
	return b
}

// maxFiledSize bounds the encoding of a valid Filed.
const maxFiledSize = 1 + 8 + binary.MaxVarintLen16 + MaxFiledEntries*(IDSize+binary.MaxVarintLen16+MaxRecordRefLen)

// UnmarshalFiled decodes and validates a Filed body. It refuses input
// longer than any valid body before reading it.
func UnmarshalFiled(b []byte) (Filed, error) {
	if len(b) > maxFiledSize {
		return Filed{}, fmt.Errorf("%w: filed body is %d bytes, limit %d", ErrTooLarge, len(b), maxFiledSize)
	}
	d := wire.NewReader(b)
	d.Version("filed", bodyVersion)
	var f Filed
	f.At = d.Uint64()
	n := d.Count(MaxFiledEntries, IDSize+1+3)
	if d.Err() == nil && n == 0 {
		d.Fail(fmt.Errorf("%w: filed op of no messages", ErrInvalid))
	}
	if n > 0 {
		f.Entries = make([]FiledEntry, n)
		for i := range f.Entries {
			copy(f.Entries[i].Message[:], d.Fixed(IDSize))
			f.Entries[i].Ref = d.String("record reference", MaxRecordRefLen)
		}
	}
	if err := d.Finish(); err != nil {
		return Filed{}, err
	}
	if err := f.Validate(); err != nil {
		return Filed{}, err
	}
	return f, nil
}

// FiledView is where a shown message was filed (MessageView.Filed and
// State.Filed): by the first filed op naming it that counts, by (Time, ID).
type FiledView struct {
	Op   OpID              // the filed op
	By   identity.DeviceID // its author, the gateway
	Time HLC               // the filed op's time: the grace period runs from it
	At   time.Time         // when the record confirmed it (the body's At)
	Ref  string            // the record's reference, "Type/id"
}

// filed computes State.Filed: for each message id that a filed op of a
// current admin's device that counts names, the first such op by (Time,
// ID). A filed op may name messages the log lacks, or has deleted: they
// are listed too (a device that receives a message after its filing
// deletes it as soon as the grace period allows).
func (l *Log) filed(j *opJudge, members []MemberInfo) map[OpID]FiledView {
	admin := make(map[identity.DeviceID]bool)
	for _, m := range members {
		admin[m.Device] = m.Admin
	}
	var out map[OpID]FiledView
	for id, op := range l.ops {
		if op.Kind != KindFiled || !admin[op.Author] || !j.counts(id) {
			continue
		}
		f, err := UnmarshalFiled(op.Body)
		if err != nil {
			continue
		}
		for _, e := range f.Entries {
			cur, ok := out[e.Message]
			if ok && (cur.Time < op.Time || cur.Time == op.Time && cur.Op.Compare(id) < 0) {
				continue
			}
			if out == nil {
				out = make(map[OpID]FiledView)
			}
			out[e.Message] = FiledView{Op: id, By: op.Author, Time: op.Time, At: f.Time(), Ref: e.Ref}
		}
	}
	return out
}
