// Package humancode writes and reads the codes fieldmesh asks people to carry from one device to
// another: invite codes (node/join) and relay codes (node/relay/relayproto). A code is read out over
// a phone, typed, pasted into a chat or shown as a QR code, so it is made to survive that:
//
//	code    = head "-" data
//	head    = prefix version        "fmi2": an invite code of version 2; "fmr3": a relay code
//	prefix  = three letters naming the kind (Kind.Prefix)
//	version = one digit, 1 to 9: the layout of the payload, which the kind's package defines
//	data    = base32(payload | CRC-32C(head | payload), 4 bytes little-endian)
//
// The alphabet is Douglas Crockford's base32 (0-9 and a-z without i, l, o and u), written in lower
// case without padding: no two of its characters sound or look alike, and Decode reads i and l as 1
// and o as 0, the mix-ups people make. Decode ignores letter case, white space and dashes anywhere,
// so a code may be grouped, wrapped or read out in pieces. Encode writes no groups: a code is one
// word that a double click selects.
//
// The checksum is CRC-32C (Castagnoli), appended little-endian so that payload and checksum form one
// CRC codeword. A CRC of 32 bits detects every error confined to 32 consecutive bits of its
// codeword; a base32 character spans 5 bits, so one mistyped character and two neighbouring
// characters swapped are always caught, and any other error escapes with probability 2^-32. It was
// chosen over a truncated SHA-256 for that guarantee. It guards against mistakes, not forgery: a
// code is a bearer secret or a pointer to one, and whoever can make a code can make its checksum.
//
// The kinds are one table in this package, so no two share a prefix and a code given where another
// kind is expected is named in the error ("this is a relay code, not an invite code"). Decode
// refuses text longer than MaxLen before looking at it, and never panics.
package humancode

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kind is what a code carries.
type Kind uint8

// The kinds of code. A kind's version is the layout of its payload: the package that defines the
// layout bumps it here when the layout changes; Decode refuses other versions.
const (
	// Invite is an invite code (node/join.Invite): "fmi", version 2.
	Invite Kind = iota + 1
	// Relay is a relay code (node/relay/relayproto.Code): "fmr", version 3.
	Relay
)

type kindInfo struct {
	prefix  string // three lower-case letters
	version byte   // '1'..'9'
	name    string
}

var kinds = [...]kindInfo{
	Invite: {"fmi", '2', "invite code"},
	Relay:  {"fmr", '3', "relay code"},
}

const (
	headLen  = 4 // prefix and version
	sumLen   = 4 // CRC-32C
	alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
)

// Limits.
const (
	// MaxPayload is the largest payload Encode takes, in bytes. Its code is 1,650 characters long.
	MaxPayload = 1024
	// MaxLen is the longest text Decode reads, in bytes, counting white space and dashes: room for a
	// code of MaxPayload bytes with a separator after every character. Longer text is refused before
	// it is decoded.
	MaxLen = 4096
)

var (
	encoding = base32.NewEncoding(alphabet).WithPadding(base32.NoPadding)
	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

// Errors returned by Decode, wrapped with detail: test with errors.Is. A code of another kind is a
// *KindError.
var (
	// ErrMalformed: the text is too long, is not a fieldmesh code, or holds characters or a length no
	// code has.
	ErrMalformed = errors.New("humancode: malformed code")
	// ErrMistyped: the text has the form of a code, but its checksum does not match its contents.
	ErrMistyped = errors.New("humancode: mistyped")
	// ErrVersion: a code of the right kind whose payload layout this build does not read.
	ErrVersion = errors.New("humancode: made by another fieldmesh version")
)

// KindError is returned by Decode for a code of another kind than the one asked for.
type KindError struct {
	Want, Got Kind
}

func (e *KindError) Error() string {
	return fmt.Sprintf("humancode: this is %s, not %s", article(e.Got), article(e.Want))
}

func article(k Kind) string {
	s := k.String()
	if strings.IndexByte("aeiou", s[0]) >= 0 {
		return "an " + s
	}
	return "a " + s
}

func (k Kind) info() (kindInfo, bool) {
	if k == 0 || int(k) >= len(kinds) {
		return kindInfo{}, false
	}
	return kinds[k], true
}

// String names the kind as people call it: "invite code", "relay code".
func (k Kind) String() string {
	if ki, ok := k.info(); ok {
		return ki.name
	}
	return fmt.Sprintf("code of unknown kind %d", uint8(k))
}

// Prefix returns the head every code of the kind starts with: its prefix and version, "fmi2".
// It is empty for a value that is not a kind.
func (k Kind) Prefix() string {
	ki, ok := k.info()
	if !ok {
		return ""
	}
	return ki.prefix + string(ki.version)
}

// Encode returns the code of kind k for payload. It panics if k is not a kind or payload is longer
// than MaxPayload: both are the calling package's constants, never input.
func Encode(k Kind, payload []byte) string {
	head := k.Prefix()
	if head == "" || len(payload) > MaxPayload {
		panic(fmt.Sprintf("humancode: Encode(%d, %d bytes): not a kind, or payload over MaxPayload", uint8(k), len(payload)))
	}
	data := make([]byte, 0, len(payload)+sumLen)
	data = append(data, payload...)
	data = binary.LittleEndian.AppendUint32(data, checksum(head, payload))
	return head + "-" + encoding.EncodeToString(data)
}

// Decode returns the payload of a code of kind k. It ignores letter case, white space and dashes
// (including the typographic ones a word processor puts in), and reads i and l as 1 and o as 0.
// It refuses text longer than MaxLen before reading it; text that is not a code, or has the wrong
// length or characters (ErrMalformed); a code of another kind (*KindError) or version (ErrVersion);
// and a code whose checksum does not match (ErrMistyped). It never panics.
func Decode(k Kind, text string) ([]byte, error) {
	want, ok := k.info()
	if !ok {
		return nil, fmt.Errorf("%w: %d is not a kind of code", ErrMalformed, uint8(k))
	}
	if len(text) > MaxLen {
		return nil, fmt.Errorf("%w: longer than %d characters", ErrMalformed, MaxLen)
	}
	s := make([]byte, 0, len(text))
	for _, r := range text {
		switch {
		case unicode.IsSpace(r) || unicode.Is(unicode.Pd, r):
		case r < utf8.RuneSelf:
			s = append(s, byte(unicode.ToLower(r)))
		default:
			return nil, fmt.Errorf("%w: %q is not a character of a code", ErrMalformed, r)
		}
	}
	notCode := func() error { return fmt.Errorf("%w: %s starts with %s", ErrMalformed, article(k), k.Prefix()) }
	if len(s) < headLen {
		return nil, notCode()
	}
	head, data := string(s[:headLen]), s[headLen:]
	if head[:headLen-1] != want.prefix {
		for other, ki := range kinds {
			if ki.prefix != "" && head[:headLen-1] == ki.prefix {
				return nil, &KindError{Want: k, Got: Kind(other)}
			}
		}
		return nil, notCode()
	}
	if v := head[headLen-1]; v != want.version {
		if v < '1' || v > '9' {
			return nil, notCode()
		}
		return nil, fmt.Errorf("%w: %s of version %c; this one reads version %c", ErrVersion, article(k), v, want.version)
	}
	for i, c := range data {
		switch c {
		case 'i', 'l':
			data[i] = '1'
		case 'o':
			data[i] = '0'
		default:
			if strings.IndexByte(alphabet, c) < 0 {
				return nil, fmt.Errorf("%w: %q is not a character of a code", ErrMalformed, c)
			}
		}
	}
	b, err := encoding.DecodeString(string(data))
	if err != nil || len(b) < sumLen {
		return nil, fmt.Errorf("%w: no code is %d characters long (one missing or extra?)", ErrMalformed, len(s))
	}
	if encoding.EncodeToString(b) != string(data) {
		// The unused low bits of the last character are not zero.
		return nil, fmt.Errorf("%w: no code ends with %q (one missing or extra?)", ErrMistyped, data[len(data)-1])
	}
	payload, sum := b[:len(b)-sumLen], b[len(b)-sumLen:]
	if binary.LittleEndian.Uint32(sum) != checksum(head, payload) {
		return nil, fmt.Errorf("%w: the checksum does not match", ErrMistyped)
	}
	return payload, nil
}

func checksum(head string, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum([]byte(head), crcTable), crcTable, payload)
}
