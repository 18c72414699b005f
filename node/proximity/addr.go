package proximity

import (
	"errors"
	"fmt"

	ma "github.com/multiformats/go-multiaddr"
)

// Code is the multiaddr protocol code of /fmprox, in the multicodec table's private-use range.
const Code = 0x3f4d50

// ProtocolName is the multiaddr name of the proximity protocol.
const ProtocolName = "fmprox"

// MaxName is the longest endpoint id or advertised name, in bytes (a peer id is 52 characters; iOS
// Multipeer display names hold 63 bytes).
const MaxName = 64

// ErrBadName is returned for an endpoint id or name that is empty, longer than MaxName, or has a
// character outside A-Z a-z 0-9 . _ ~ -.
var ErrBadName = errors.New("proximity: an endpoint name is 1 to 64 letters, digits or . _ ~ -")

// CheckName reports whether s may be an endpoint id or advertised name.
func CheckName(s string) error {
	if len(s) == 0 || len(s) > MaxName {
		return ErrBadName
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-'
		if !ok {
			return ErrBadName
		}
	}
	return nil
}

var transcoder = ma.NewTranscoderFromFunctions(
	func(s string) ([]byte, error) {
		if err := CheckName(s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	},
	func(b []byte) (string, error) {
		if err := CheckName(string(b)); err != nil {
			return "", err
		}
		return string(b), nil
	},
	func(b []byte) error { return CheckName(string(b)) },
)

func init() {
	if err := ma.AddProtocol(ma.Protocol{
		Name:       ProtocolName,
		Code:       Code,
		VCode:      ma.CodeToVarint(Code),
		Size:       ma.LengthPrefixedVarSize,
		Transcoder: transcoder,
	}); err != nil {
		panic(fmt.Sprintf("proximity: register multiaddr protocol: %v", err))
	}
}

// Multiaddr returns /fmprox/name.
func Multiaddr(name string) (ma.Multiaddr, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	c, err := ma.NewComponent(ProtocolName, name)
	if err != nil {
		return nil, err
	}
	return c.Multiaddr(), nil
}

// nameOf returns the endpoint id or name of a proximity multiaddr (/fmprox/X, optionally followed by
// /p2p/ID).
func nameOf(a ma.Multiaddr) (string, error) {
	if len(a) == 0 || a[0].Code() != Code {
		return "", fmt.Errorf("proximity: %s is not a proximity address", a)
	}
	for _, c := range a[1:] {
		if c.Code() != ma.P_P2P {
			return "", fmt.Errorf("proximity: %s is not a proximity address", a)
		}
	}
	return a[0].Value(), nil
}
