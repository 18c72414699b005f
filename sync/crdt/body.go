package crdt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/safetext"
	"github.com/fieldmesh/fieldmesh/sync/wire"
)

// Limits of body fields, in bytes of UTF-8.
const (
	MaxNameLen    = 64       // team and member names; also at least 1
	MaxTextLen    = 16 << 10 // message text
	MaxPatientLen = 128      // message patient reference
)

const bodyVersion = 1

// TeamKind says whether a team is clinical or social; the two are kept apart.
type TeamKind uint8

// Team kinds.
const (
	Clinical TeamKind = 1
	Social   TeamKind = 2
)

// String returns "clinical", "social" or "TeamKind(N)".
func (k TeamKind) String() string {
	switch k {
	case Clinical:
		return "clinical"
	case Social:
		return "social"
	}
	return fmt.Sprintf("TeamKind(%d)", uint8(k))
}

// ParseTeamKind parses "clinical" or "social".
func ParseTeamKind(s string) (TeamKind, error) {
	switch s {
	case "clinical":
		return Clinical, nil
	case "social":
		return Social, nil
	}
	return 0, fmt.Errorf("%w: team kind %q (want clinical or social)", ErrInvalid, s)
}

// MarshalText implements encoding.TextMarshaler (JSON strings). It never
// fails: an invalid kind marshals as its String form, which UnmarshalText
// refuses.
func (k TeamKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *TeamKind) UnmarshalText(b []byte) error {
	v, err := ParseTeamKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

func (k TeamKind) valid() bool { return k == Clinical || k == Social }

// Priority is the urgency of a message.
type Priority uint8

// Priorities.
const (
	Routine   Priority = 0
	Urgent    Priority = 1
	Emergency Priority = 2
)

// String returns "routine", "urgent", "emergency" or "Priority(N)".
func (p Priority) String() string {
	switch p {
	case Routine:
		return "routine"
	case Urgent:
		return "urgent"
	case Emergency:
		return "emergency"
	}
	return fmt.Sprintf("Priority(%d)", uint8(p))
}

// ParsePriority parses "routine", "urgent" or "emergency".
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "routine":
		return Routine, nil
	case "urgent":
		return Urgent, nil
	case "emergency":
		return Emergency, nil
	}
	return 0, fmt.Errorf("%w: priority %q (want routine, urgent or emergency)", ErrInvalid, s)
}

// MarshalText implements encoding.TextMarshaler (JSON strings). It never
// fails: an invalid priority marshals as its String form, which
// UnmarshalText refuses.
func (p Priority) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Priority) UnmarshalText(b []byte) error {
	v, err := ParsePriority(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

func (p Priority) valid() bool { return p <= Emergency }

func checkName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalid, what, len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	if err := safetext.CheckName(s); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
	}
	return nil
}

// ErrTextTooLong is the one error for a message text over MaxTextLen, whoever checks it (Validate, the
// command line before it reads further).
var ErrTextTooLong = fmt.Errorf("%w: the message is longer than the limit of %d bytes (16 KiB)", ErrInvalid, MaxTextLen)

func checkText(what, s string, max int) error {
	switch {
	case len(s) > max:
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalid, what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	return nil
}

// MemberInfo describes a member device: its keys, display name and role.
//
// Encoding: device 32 bytes | noise 32 bytes | name (uvarint length, bytes) |
// admin byte (0 or 1).
type MemberInfo struct {
	Device identity.DeviceID
	Noise  identity.NoisePublic
	Name   string // 1..MaxNameLen bytes of UTF-8
	Admin  bool
	// Label is not encoded: in a State's Members it is the device's own name, which the ActLink
	// that linked it gave (that change's Info.Name), so a person's devices can be told apart; empty
	// for the device a person joined with (shown by the person's Name).
	Label string
}

// Validate checks the name.
func (m MemberInfo) Validate() error { return checkName("member name", m.Name) }

func (m MemberInfo) append(b []byte) []byte {
	b = append(b, m.Device[:]...)
	b = append(b, m.Noise[:]...)
	b = wire.AppendString(b, m.Name)
	return wire.AppendBool(b, m.Admin)
}

func readMemberInfo(d *wire.Reader) MemberInfo {
	var m MemberInfo
	copy(m.Device[:], d.Fixed(32))
	copy(m.Noise[:], d.Fixed(32))
	m.Name = d.String("member name", MaxNameLen)
	m.Admin = d.Bool()
	if d.Err() == nil {
		if err := m.Validate(); err != nil {
			d.Fail(err)
		}
	}
	return m
}

// Create is the body of a team's genesis op (KindCreate). The op's author
// must be Creator.Device; the creator is an admin whatever Creator.Admin
// says.
//
// Encoding: version 1 | name (uvarint length, bytes) | kind byte | Creator.
type Create struct {
	Name    string // 1..MaxNameLen bytes of UTF-8
	Kind    TeamKind
	Creator MemberInfo
}

// Validate checks the limits that UnmarshalCreate enforces.
func (c Create) Validate() error {
	if err := checkName("team name", c.Name); err != nil {
		return err
	}
	if !c.Kind.valid() {
		return fmt.Errorf("%w: team kind %d", ErrInvalid, uint8(c.Kind))
	}
	return c.Creator.Validate()
}

// Marshal encodes c. It does not validate; call Validate first.
func (c Create) Marshal() []byte {
	b := make([]byte, 0, 1+1+len(c.Name)+1+64+1+len(c.Creator.Name)+1)
	b = append(b, bodyVersion)
	b = wire.AppendString(b, c.Name)
	b = append(b, byte(c.Kind))
	return c.Creator.append(b)
}

// UnmarshalCreate decodes and validates a Create body.
func UnmarshalCreate(b []byte) (Create, error) {
	if len(b) > MaxOpSize {
		return Create{}, fmt.Errorf("%w: body is %d bytes", ErrTooLarge, len(b))
	}
	d := wire.NewReader(b)
	d.Version("create", bodyVersion)
	var c Create
	c.Name = d.String("team name", MaxNameLen)
	c.Kind = TeamKind(d.Byte())
	c.Creator = readMemberInfo(d)
	if err := d.Finish(); err != nil {
		return Create{}, err
	}
	if err := c.Validate(); err != nil {
		return Create{}, err
	}
	return c, nil
}

// Action is what one Change of a Commit does.
type Action uint8

// Actions. A person's id is the DeviceID of the device first added for them
// (for the creator, the genesis author's device).
const (
	ActAdd     Action = 1 // Info: a new person (person id = Info.Device) with its first device; Info.Admin = admin
	ActRemove  Action = 2 // Target: a person id; removes the person and all their devices
	ActPromote Action = 3 // Target: a person id; makes the person an admin
	ActLink    Action = 4 // Info: a new device; Target: the person it belongs to (Info.Name and Info.Admin are not used)
	ActUnlink  Action = 5 // Target: a device id; removes that one device (not the person)
)

// String returns "add", "remove", "promote", "link", "unlink" or "Action(N)".
func (a Action) String() string {
	switch a {
	case ActAdd:
		return "add"
	case ActRemove:
		return "remove"
	case ActPromote:
		return "promote"
	case ActLink:
		return "link"
	case ActUnlink:
		return "unlink"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// hasInfo and hasTarget say which fields of a Change an action uses.
func (a Action) hasInfo() bool   { return a == ActAdd || a == ActLink }
func (a Action) hasTarget() bool { return a != ActAdd }

// Change is one membership change of a Commit. The fields an action does
// not use (see the Act constants) must be zero.
//
// Encoding: action byte | [Info (MemberInfo encoding), for add and link] |
// [Target 32 bytes, for remove, promote, link and unlink].
type Change struct {
	Action Action
	Info   MemberInfo
	Target identity.DeviceID
}

// subject returns the id a change is about: the device it adds or links,
// or its target.
func (c Change) subject() identity.DeviceID {
	if c.Action.hasInfo() {
		return c.Info.Device
	}
	return c.Target
}

// Validate checks the limits that UnmarshalCommit enforces on one change.
func (c Change) Validate() error {
	if c.Action < ActAdd || c.Action > ActUnlink {
		return fmt.Errorf("%w: member action %d", ErrMalformed, uint8(c.Action))
	}
	if c.Action.hasInfo() {
		if err := c.Info.Validate(); err != nil {
			return err
		}
	} else if c.Info != (MemberInfo{}) {
		return fmt.Errorf("%w: %v change with member info", ErrInvalid, c.Action)
	}
	if !c.Action.hasTarget() && c.Target != (identity.DeviceID{}) {
		return fmt.Errorf("%w: %v change with a target", ErrInvalid, c.Action)
	}
	return nil
}

func (c Change) append(b []byte) []byte {
	b = append(b, byte(c.Action))
	if c.Action.hasInfo() {
		b = c.Info.append(b)
	}
	if c.Action.hasTarget() {
		b = append(b, c.Target[:]...)
	}
	return b
}

func readChange(d *wire.Reader) Change {
	var c Change
	c.Action = Action(d.Byte())
	if d.Err() == nil && (c.Action < ActAdd || c.Action > ActUnlink) {
		d.Fail(fmt.Errorf("%w: member action %d", ErrMalformed, uint8(c.Action)))
	}
	if c.Action.hasInfo() {
		c.Info = readMemberInfo(d)
	}
	if c.Action.hasTarget() {
		copy(c.Target[:], d.Fixed(32))
	}
	return c
}

// Recipient is a device that receives the key of a new epoch, with the
// Noise static key its box is sealed to.
type Recipient struct {
	Device identity.DeviceID
	Noise  identity.NoisePublic
}

// Limits of a Commit.
const (
	MaxChanges    = 64  // changes in one commit
	MaxRecipients = 256 // recipient devices of one epoch
)

// Commit is the body of a membership op (KindMember): zero or more
// membership changes, and the start of a new key epoch whose key goes to
// exactly Recipients. A commit with no changes is a re-key (a scheduled
// rotation, or the re-key after a partition merge). The changes are applied
// in order, and at most one change of a commit may name a given device or
// person (as the device it adds or links, or as its target). Log.State says
// which commits count.
//
// Encoding: version 1 | number u32 big-endian | uvarint count (0..MaxChanges)
// | Changes | uvarint count (1..MaxRecipients) | Recipients (device 32 bytes,
// noise 32 bytes each), strictly ascending by Device.
type Commit struct {
	Number     uint32      // epoch number started by this commit, >= 2
	Changes    []Change    // 0..MaxChanges (0 = re-key)
	Recipients []Recipient // strictly ascending by Device, 1..MaxRecipients
}

// Validate checks the limits that UnmarshalCommit enforces.
func (c Commit) Validate() error {
	if c.Number < 2 {
		return fmt.Errorf("%w: commit epoch number %d (want >= 2)", ErrInvalid, c.Number)
	}
	if len(c.Changes) > MaxChanges {
		return fmt.Errorf("%w: %d changes, limit %d", ErrTooLarge, len(c.Changes), MaxChanges)
	}
	for i, ch := range c.Changes {
		if err := ch.Validate(); err != nil {
			return err
		}
		for _, prev := range c.Changes[:i] {
			if prev.subject() == ch.subject() {
				return fmt.Errorf("%w: two changes of one commit name device %s", ErrInvalid, ch.subject().Short())
			}
		}
	}
	switch {
	case len(c.Recipients) == 0:
		return fmt.Errorf("%w: commit with no recipients", ErrInvalid)
	case len(c.Recipients) > MaxRecipients:
		return fmt.Errorf("%w: %d recipients, limit %d", ErrTooLarge, len(c.Recipients), MaxRecipients)
	}
	for i := 1; i < len(c.Recipients); i++ {
		if compareDevice(c.Recipients[i-1].Device, c.Recipients[i].Device) >= 0 {
			return fmt.Errorf("%w: commit recipients not strictly ascending", ErrMalformed)
		}
	}
	return nil
}

// Marshal encodes c. It does not validate; call Validate first.
func (c Commit) Marshal() []byte {
	b := make([]byte, 0, 1+4+2+len(c.Changes)*(1+64+1+MaxNameLen+1+32)+2+64*len(c.Recipients))
	b = append(b, bodyVersion)
	b = binary.BigEndian.AppendUint32(b, c.Number)
	b = binary.AppendUvarint(b, uint64(len(c.Changes)))
	for _, ch := range c.Changes {
		b = ch.append(b)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Recipients)))
	for _, r := range c.Recipients {
		b = append(b, r.Device[:]...)
		b = append(b, r.Noise[:]...)
	}
	return b
}

// maxCommitSize bounds the encoding of a valid Commit.
const maxCommitSize = 1 + 4 + binary.MaxVarintLen16 + MaxChanges*(1+64+1+MaxNameLen+1+32) +
	binary.MaxVarintLen16 + 64*MaxRecipients

// UnmarshalCommit decodes and validates a Commit body.
func UnmarshalCommit(b []byte) (Commit, error) {
	if len(b) > maxCommitSize {
		return Commit{}, fmt.Errorf("%w: commit body is %d bytes, limit %d", ErrTooLarge, len(b), maxCommitSize)
	}
	d := wire.NewReader(b)
	d.Version("commit", bodyVersion)
	var c Commit
	c.Number = d.Uint32()
	if d.Err() == nil && c.Number < 2 {
		d.Fail(fmt.Errorf("%w: commit epoch number %d (want >= 2)", ErrInvalid, c.Number))
	}
	// The smallest change (remove, promote, unlink) is 33 bytes.
	if n := d.Count(MaxChanges, 1+32); n > 0 {
		c.Changes = make([]Change, n)
		for i := range c.Changes {
			c.Changes[i] = readChange(d)
		}
	}
	n := d.Count(MaxRecipients, 64)
	if d.Err() == nil && n == 0 {
		d.Fail(fmt.Errorf("%w: commit with no recipients", ErrInvalid))
	}
	if n > 0 {
		c.Recipients = make([]Recipient, n)
		for i := range c.Recipients {
			r := &c.Recipients[i]
			copy(r.Device[:], d.Fixed(32))
			copy(r.Noise[:], d.Fixed(32))
			if i > 0 && d.Err() == nil && compareDevice(c.Recipients[i-1].Device, r.Device) >= 0 {
				d.Fail(fmt.Errorf("%w: commit recipients not strictly ascending", ErrMalformed))
			}
		}
	}
	if err := d.Finish(); err != nil {
		return Commit{}, err
	}
	if err := c.Validate(); err != nil {
		return Commit{}, err
	}
	return c, nil
}

// Prekey is the body of a prekey op (KindPrekey): a device publishes a fresh
// one-time X25519 key, to which the next commit seals its box (see
// sync/teamkeys). Only the op's author uses it; the key must not be of small
// order.
//
// Encoding: version 1 | key 32 bytes.
type Prekey struct {
	Key identity.NoisePublic
}

// Validate checks what UnmarshalPrekey checks.
func (p Prekey) Validate() error {
	if !noiseOK(p.Key) {
		return fmt.Errorf("%w: a prekey of small order", ErrInvalid)
	}
	return nil
}

// Marshal encodes p. It does not validate; call Validate first.
func (p Prekey) Marshal() []byte {
	return append([]byte{bodyVersion}, p.Key[:]...)
}

// UnmarshalPrekey decodes and validates a Prekey body.
func UnmarshalPrekey(b []byte) (Prekey, error) {
	if len(b) > MaxOpSize {
		return Prekey{}, fmt.Errorf("%w: body is %d bytes", ErrTooLarge, len(b))
	}
	d := wire.NewReader(b)
	d.Version("prekey", bodyVersion)
	var p Prekey
	copy(p.Key[:], d.Fixed(32))
	if err := d.Finish(); err != nil {
		return Prekey{}, err
	}
	if err := p.Validate(); err != nil {
		return Prekey{}, err
	}
	return p, nil
}

// Limits of a Relay body.
const (
	MaxRelayPeerLen = 128 // bytes of a libp2p peer id
	MaxRelayAddrs   = 8
	MaxRelayAddrLen = 256 // bytes of one binary multiaddr
)

// Relay is the body of a relay op (KindRelay): an admin tells the team's
// devices that a clinic relay carries the team, and where to reach it, or
// (Removed) that it no longer does. The package does not parse the peer id
// or the addresses; the node does, and ignores what does not parse.
//
// Encoding: version 1 | peer (uvarint length 1..MaxRelayPeerLen, bytes) |
// uvarint count (0..MaxRelayAddrs) | count × (uvarint length
// 1..MaxRelayAddrLen, binary multiaddr) | removed byte (0 or 1).
type Relay struct {
	Peer    []byte
	Addrs   [][]byte
	Removed bool
}

// Validate checks the limits that UnmarshalRelay enforces.
func (r Relay) Validate() error {
	switch {
	case len(r.Peer) == 0 || len(r.Peer) > MaxRelayPeerLen:
		return fmt.Errorf("%w: relay peer id of %d bytes", ErrInvalid, len(r.Peer))
	case len(r.Addrs) > MaxRelayAddrs:
		return fmt.Errorf("%w: %d relay addresses, limit %d", ErrTooLarge, len(r.Addrs), MaxRelayAddrs)
	}
	for _, a := range r.Addrs {
		if len(a) == 0 || len(a) > MaxRelayAddrLen {
			return fmt.Errorf("%w: relay address of %d bytes", ErrInvalid, len(a))
		}
	}
	return nil
}

// Marshal encodes r. It does not validate; call Validate first.
func (r Relay) Marshal() []byte {
	b := []byte{bodyVersion}
	b = binary.AppendUvarint(b, uint64(len(r.Peer)))
	b = append(b, r.Peer...)
	b = binary.AppendUvarint(b, uint64(len(r.Addrs)))
	for _, a := range r.Addrs {
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
	}
	return wire.AppendBool(b, r.Removed)
}

// UnmarshalRelay decodes and validates a Relay body.
func UnmarshalRelay(b []byte) (Relay, error) {
	if len(b) > MaxOpSize {
		return Relay{}, fmt.Errorf("%w: body is %d bytes", ErrTooLarge, len(b))
	}
	d := wire.NewReader(b)
	d.Version("relay", bodyVersion)
	var r Relay
	r.Peer = bytes.Clone(d.Bytes(MaxRelayPeerLen))
	n := d.Count(MaxRelayAddrs, 2)
	for i := 0; i < n && d.Err() == nil; i++ {
		r.Addrs = append(r.Addrs, bytes.Clone(d.Bytes(MaxRelayAddrLen)))
	}
	r.Removed = d.Bool()
	if err := d.Finish(); err != nil {
		return Relay{}, err
	}
	if err := r.Validate(); err != nil {
		return Relay{}, err
	}
	return r, nil
}

// Message is the body of a team message op (KindMessage).
//
// Encoding, laid out for bytes (it is most of what a health worker sends):
//
//	head         1 byte: bits 0-1 the priority (0 to 2), bit 2 a reply, bit 3 for
//	             the record, bit 4 attachments, bit 5 a patient reference; bits 6-7 0
//	patient      uvarint length (1..MaxPatientLen), bytes; if bit 5
//	reply-to     op id, 16 bytes; if bit 2
//	attachments  count uvarint (1..MaxAttachments), count × Attachment; if bit 4
//	text         the rest (UTF-8, at most MaxTextLen bytes; may be empty)
//
// It has no version byte of its own: the op's version says the encodings of
// its bodies (message bodies are the one body type without one, for the byte).
type Message struct {
	Text     string // at most MaxTextLen bytes of UTF-8
	Priority Priority
	Patient  string // optional patient reference, at most MaxPatientLen bytes of UTF-8
	ReplyTo  *OpID  // optional
	// Attachments are the manifests of the message's attachments, at most
	// MaxAttachments of at most MaxMessageAttachmentBytes together (see
	// Attachment). Optional.
	Attachments []Attachment
	// ForRecord says its author asked for the message to be filed to the
	// health record (a record gateway files it, in a clinical team, even
	// with no patient reference).
	ForRecord bool
}

// Validate checks the limits that UnmarshalMessage enforces.
func (m Message) Validate() error {
	if len(m.Text) > MaxTextLen {
		return ErrTextTooLong
	}
	if err := checkText("message text", m.Text, MaxTextLen); err != nil {
		return err
	}
	if !m.Priority.valid() {
		return fmt.Errorf("%w: priority %d", ErrInvalid, uint8(m.Priority))
	}
	if err := checkText("patient reference", m.Patient, MaxPatientLen); err != nil {
		return err
	}
	return checkAttachments(m.Attachments)
}

// The bits of a message body's head byte (see Message).
const (
	msgPriority  byte = 3 << 0 // the Priority
	msgReply     byte = 1 << 2 // a reply-to op id follows
	msgForRecord byte = 1 << 3 // Message.ForRecord
	msgAttached  byte = 1 << 4 // attachments follow
	msgPatient   byte = 1 << 5 // a patient reference follows
)

// Marshal encodes m. It does not validate; call Validate first.
func (m Message) Marshal() []byte {
	b := make([]byte, 0, 1+2+len(m.Patient)+IDSize+len(m.Text))
	head := byte(m.Priority) & msgPriority
	if m.ReplyTo != nil {
		head |= msgReply
	}
	if m.ForRecord {
		head |= msgForRecord
	}
	if len(m.Attachments) > 0 {
		head |= msgAttached
	}
	if m.Patient != "" {
		head |= msgPatient
	}
	b = append(b, head)
	if m.Patient != "" {
		b = wire.AppendString(b, m.Patient)
	}
	if m.ReplyTo != nil {
		b = append(b, m.ReplyTo[:]...)
	}
	b = appendAttachments(b, m.Attachments)
	return append(b, m.Text...)
}

// UnmarshalMessage decodes and validates a Message body. It refuses unknown
// head bits, priority 3, an empty patient reference (bit 5 says there is
// one) and an attachment section of 0 items.
func UnmarshalMessage(b []byte) (Message, error) {
	if len(b) > MaxOpSize {
		return Message{}, fmt.Errorf("%w: body is %d bytes", ErrTooLarge, len(b))
	}
	d := wire.NewReader(b)
	var m Message
	head := d.Byte()
	switch {
	case d.Err() != nil:
	case head&^(msgPriority|msgReply|msgForRecord|msgAttached|msgPatient) != 0:
		d.Fail(fmt.Errorf("%w: message head %#x", ErrMalformed, head))
	case !Priority(head & msgPriority).valid():
		d.Fail(fmt.Errorf("%w: priority %d", ErrInvalid, head&msgPriority))
	}
	m.Priority = Priority(head & msgPriority)
	if head&msgPatient != 0 {
		m.Patient = d.String("patient reference", MaxPatientLen)
		if d.Err() == nil && m.Patient == "" {
			d.Fail(fmt.Errorf("%w: empty patient reference (head bit 5 says there is one)", ErrMalformed))
		}
	}
	if head&msgReply != 0 {
		var id OpID
		copy(id[:], d.Fixed(IDSize))
		m.ReplyTo = &id
	}
	m.ForRecord = head&msgForRecord != 0
	if head&msgAttached != 0 {
		m.Attachments = readAttachments(d)
	}
	if d.Err() == nil {
		text := string(d.Fixed(d.Len()))
		if err := checkText("message text", text, MaxTextLen); err != nil {
			d.Fail(err)
		}
		m.Text = text
	}
	if err := d.Finish(); err != nil {
		return Message{}, err
	}
	return m, nil
}

// MaxAckIDs is the most message ids one Ack carries.
const MaxAckIDs = 512

// Ack is the body of an acknowledgement op (KindAck): its author has
// received (Read false) or read (Read true) the messages with the given ids.
// Reading implies receiving. One op acknowledges many messages: see
// [SplitAcks] and [State.Unacked] for the batching rule.
//
// Encoding: version 1 | read byte (0 or 1) | uvarint count (1..MaxAckIDs) |
// count × op id 16 bytes, strictly ascending.
type Ack struct {
	Read bool
	IDs  []OpID // 1..MaxAckIDs ids, strictly ascending
}

// Validate checks the limits that UnmarshalAck enforces.
func (a Ack) Validate() error {
	switch {
	case len(a.IDs) == 0:
		return fmt.Errorf("%w: ack of no messages", ErrInvalid)
	case len(a.IDs) > MaxAckIDs:
		return fmt.Errorf("%w: ack of %d messages, limit %d", ErrTooLarge, len(a.IDs), MaxAckIDs)
	}
	for i := 1; i < len(a.IDs); i++ {
		if a.IDs[i-1].Compare(a.IDs[i]) >= 0 {
			return fmt.Errorf("%w: ack ids not strictly ascending", ErrMalformed)
		}
	}
	return nil
}

// Marshal encodes a. It does not validate; call Validate first (or build
// acks with SplitAcks).
func (a Ack) Marshal() []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen16+IDSize*len(a.IDs))
	b = append(b, bodyVersion)
	b = wire.AppendBool(b, a.Read)
	b = binary.AppendUvarint(b, uint64(len(a.IDs)))
	for _, id := range a.IDs {
		b = append(b, id[:]...)
	}
	return b
}

// UnmarshalAck decodes and validates an Ack body.
func UnmarshalAck(b []byte) (Ack, error) {
	if limit := 2 + binary.MaxVarintLen16 + IDSize*MaxAckIDs; len(b) > limit {
		return Ack{}, fmt.Errorf("%w: ack body is %d bytes, limit %d", ErrTooLarge, len(b), limit)
	}
	d := wire.NewReader(b)
	d.Version("ack", bodyVersion)
	var a Ack
	a.Read = d.Bool()
	n := d.Count(MaxAckIDs, IDSize)
	if d.Err() == nil && n == 0 {
		d.Fail(fmt.Errorf("%w: ack of no messages", ErrInvalid))
	}
	if n > 0 {
		a.IDs = make([]OpID, n)
		for i := range a.IDs {
			copy(a.IDs[i][:], d.Fixed(IDSize))
			if i > 0 && d.Err() == nil && a.IDs[i-1].Compare(a.IDs[i]) >= 0 {
				d.Fail(fmt.Errorf("%w: ack ids not strictly ascending", ErrMalformed))
			}
		}
	}
	if err := d.Finish(); err != nil {
		return Ack{}, err
	}
	return a, nil
}

// SplitAcks returns the fewest valid Acks that acknowledge ids (sorted and
// de-duplicated, MaxAckIDs per Ack), or nil if ids is empty. It does not
// modify ids.
func SplitAcks(read bool, ids []OpID) []Ack {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, OpID.Compare)
	ids = slices.Compact(ids)
	var out []Ack
	for len(ids) > 0 {
		n := min(len(ids), MaxAckIDs)
		out = append(out, Ack{Read: read, IDs: ids[:n:n]})
		ids = ids[n:]
	}
	return out
}

// SealedID is an op id with a signature of its author for a seal (see
// Seal): half of an Evidence.
type SealedID struct {
	ID    OpID
	Inner InnerHash // the seal's inner hash (see Seal)
	Sig   []byte    // SigSize bytes
}

// SealedOf returns the half of an Evidence that seal s of op id gives.
func SealedOf(id OpID, s Seal) SealedID {
	return SealedID{ID: id, Inner: s.Inner, Sig: s.Sig}
}

// Evidence is the body of an evidence op (KindEvidence): two different ops
// that Device signed for one position (Epoch, Index) of its sender chain.
// An honest device never does that (its chain advances before a sealed op
// leaves it); a device whose key state was rolled back, or that misbehaves,
// does. Any member that meets both signatures publishes an Evidence, and
// Log.State hides both ops and lists the device in State.Equivocations, the
// same way on every device whatever it had shown before. The signatures are
// checked against Device's key; the ops themselves need not be in the log
// (the device that found them may be unable to open the second: its key
// was spent on the first).
//
// Encoding: version 1 | device 32 | epoch u32 | index u32 | A.ID 16 |
// A.Inner 16 | A.Sig 64 | B.ID 16 | B.Inner 16 | B.Sig 64, with A.ID < B.ID.
// The inner hashes are what each signature signed besides the id (see
// Seal), so the evidence verifies without either envelope.
type Evidence struct {
	Device identity.DeviceID
	Epoch  uint32
	Index  uint32
	A, B   SealedID
}

const evidenceSize = 1 + 32 + 4 + 4 + 2*(IDSize+InnerHashSize+SigSize)

// NewEvidence returns the Evidence of two seals of device at (epoch, index),
// in canonical order. It does not verify them.
func NewEvidence(device identity.DeviceID, epoch, index uint32, a, b SealedID) Evidence {
	if b.ID.Compare(a.ID) < 0 {
		a, b = b, a
	}
	return Evidence{Device: device, Epoch: epoch, Index: index, A: a, B: b}
}

// Validate checks the form that UnmarshalEvidence enforces: two different
// ids, ascending, and 64-byte signatures.
func (e Evidence) Validate() error {
	switch {
	case e.A.ID.Compare(e.B.ID) >= 0:
		return fmt.Errorf("%w: evidence ids not strictly ascending", ErrInvalid)
	case len(e.A.Sig) != SigSize || len(e.B.Sig) != SigSize:
		return fmt.Errorf("%w: evidence signature not %d bytes", ErrInvalid, SigSize)
	}
	return nil
}

// Verify reports whether both signatures are Device's seals of their ops
// at (Epoch, Index) in team, and the evidence is well formed.
func (e Evidence) Verify(team TeamID) bool {
	return e.Validate() == nil &&
		VerifySeal(team, e.Device, e.A.ID, Seal{Epoch: e.Epoch, Index: e.Index, Inner: e.A.Inner, Sig: e.A.Sig}) &&
		VerifySeal(team, e.Device, e.B.ID, Seal{Epoch: e.Epoch, Index: e.Index, Inner: e.B.Inner, Sig: e.B.Sig})
}

// Marshal encodes e. It does not validate; call Validate first.
func (e Evidence) Marshal() []byte {
	b := make([]byte, 0, evidenceSize)
	b = append(b, bodyVersion)
	b = append(b, e.Device[:]...)
	b = binary.BigEndian.AppendUint32(b, e.Epoch)
	b = binary.BigEndian.AppendUint32(b, e.Index)
	for _, s := range []SealedID{e.A, e.B} {
		b = append(b, s.ID[:]...)
		b = append(b, s.Inner[:]...)
		b = append(b, s.Sig...)
	}
	return b
}

// UnmarshalEvidence decodes and validates an Evidence body.
func UnmarshalEvidence(b []byte) (Evidence, error) {
	if len(b) != evidenceSize {
		return Evidence{}, fmt.Errorf("%w: evidence body of %d bytes, want %d", ErrMalformed, len(b), evidenceSize)
	}
	d := wire.NewReader(b)
	d.Version("evidence", bodyVersion)
	var e Evidence
	copy(e.Device[:], d.Fixed(32))
	e.Epoch = d.Uint32()
	e.Index = d.Uint32()
	for _, s := range []*SealedID{&e.A, &e.B} {
		copy(s.ID[:], d.Fixed(IDSize))
		copy(s.Inner[:], d.Fixed(InnerHashSize))
		s.Sig = bytes.Clone(d.Fixed(SigSize))
	}
	if err := d.Finish(); err != nil {
		return Evidence{}, err
	}
	if err := e.Validate(); err != nil {
		return Evidence{}, err
	}
	return e, nil
}

// CheckBody reports whether body decodes as kind's body type and keeps its
// limits (for the kinds this package knows; other kinds pass): what
// Log.Add checks of an op's body, for an op not yet signed.
func CheckBody(kind Kind, body []byte) error { return checkBody(kind, body) }

// checkBody decodes body as kind's body type, for the kinds this package
// knows; other kinds pass.
func checkBody(kind Kind, body []byte) error {
	var err error
	switch kind {
	case KindCreate:
		_, err = UnmarshalCreate(body)
	case KindMember:
		_, err = UnmarshalCommit(body)
	case KindMessage:
		_, err = UnmarshalMessage(body)
	case KindAck:
		_, err = UnmarshalAck(body)
	case KindEvidence:
		_, err = UnmarshalEvidence(body)
	case KindRelay:
		_, err = UnmarshalRelay(body)
	case KindPrekey:
		_, err = UnmarshalPrekey(body)
	case KindDuty:
		_, err = UnmarshalDuty(body)
	case KindRota:
		_, err = UnmarshalRota(body)
	case KindReview:
		_, err = UnmarshalReview(body)
	case KindPolicy:
		_, err = UnmarshalPolicy(body)
	case KindFiled:
		_, err = UnmarshalFiled(body)
	}
	if err != nil {
		return fmt.Errorf("%w: %v: %w", ErrBadBody, kind, err)
	}
	return nil
}
