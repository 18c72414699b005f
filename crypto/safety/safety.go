package safety

import (
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// Iterations is the number of SHA-512 rounds per device, as in Signal.
const Iterations = 5200

const (
	version    = 0
	identifier = "fieldmesh/v1/safety-number"
	qrPrefix   = "FIELDMESH:SN0:" // QR alphanumeric mode: upper case, digits and ':'
	qrLen      = len(qrPrefix) + 2*2*32
)

// Errors returned by MatchQR.
var (
	ErrNotSafetyQR = errors.New("safety: not a fieldmesh safety-number QR code")
	ErrMismatch    = errors.New("safety: safety numbers differ: the keys are not the ones you expect")
)

// SafetyNumber is the fingerprint of a pair of devices. The zero value is
// not a valid number.
type SafetyNumber struct {
	lo, hi half // sorted by digits
}

type half struct {
	hash   [32]byte // the first 32 bytes of the iterated hash
	digits string   // 30 digits from its first 30 bytes
}

// Number returns the safety number of devices a and b, given each one's id
// and Noise static key. Number(a, b, an, bn) == Number(b, a, bn, an).
func Number(a, b identity.DeviceID, an, bn identity.NoisePublic) SafetyNumber {
	x, y := deviceHalf(a, an), deviceHalf(b, bn)
	if y.digits < x.digits || (y.digits == x.digits && string(y.hash[:]) < string(x.hash[:])) {
		x, y = y, x
	}
	return SafetyNumber{lo: x, hi: y}
}

func deviceHalf(id identity.DeviceID, np identity.NoisePublic) half {
	key := make([]byte, 0, 64)
	key = append(key, id[:]...)
	key = append(key, np[:]...)
	h := make([]byte, 0, sha512.Size+len(key))
	h = binary.BigEndian.AppendUint16(h, version)
	h = append(h, key...)
	h = append(h, identifier...)
	for range Iterations {
		sum := sha512.Sum512(append(h, key...))
		h = append(h[:0], sum[:]...)
	}
	var out half
	copy(out.hash[:], h)
	var d strings.Builder
	for i := range 6 {
		c := h[i*5:][:5]
		v := uint64(c[0])<<32 | uint64(c[1])<<24 | uint64(c[2])<<16 | uint64(c[3])<<8 | uint64(c[4])
		v %= 100000
		d.WriteString(pad5(v))
	}
	out.digits = d.String()
	return out
}

func pad5(v uint64) string {
	var b [5]byte
	for i := 4; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[:])
}

// Digits returns the 60 digits with no spaces.
func (n SafetyNumber) Digits() string { return n.lo.digits + n.hi.digits }

// String returns the 60 digits as 12 groups of 5 separated by single spaces,
// for example "05123 88013 ... 71530". Show it as 3 lines of 4 groups.
func (n SafetyNumber) String() string {
	d := n.Digits()
	var b strings.Builder
	for i := 0; i < len(d); i += 5 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(d[i : i+5])
	}
	return b.String()
}

// QR returns the text to put in a QR code: "FIELDMESH:SN0:" followed by the
// 32-byte hashes of both devices in upper-case hex, in the order of the
// digits (142 characters, all in the QR alphanumeric set).
func (n SafetyNumber) QR() string {
	return qrPrefix + strings.ToUpper(hex.EncodeToString(n.lo.hash[:])+hex.EncodeToString(n.hi.hash[:]))
}

// MatchQR checks a scanned QR payload against n. It returns nil if the
// payload is n's, [ErrMismatch] if it is another fieldmesh safety number,
// and [ErrNotSafetyQR] for anything else (another app's code, another
// version, a damaged scan).
func (n SafetyNumber) MatchQR(scanned string) error {
	if len(scanned) != qrLen || !strings.HasPrefix(scanned, qrPrefix) {
		return ErrNotSafetyQR
	}
	body := scanned[len(qrPrefix):]
	for i := 0; i < len(body); i++ {
		if c := body[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return ErrNotSafetyQR
		}
	}
	if subtle.ConstantTimeCompare([]byte(scanned), []byte(n.QR())) != 1 {
		return ErrMismatch
	}
	return nil
}
