package crdt

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// ErrBadID is returned by ParseTeamID and ParseOpID.
var ErrBadID = errors.New("crdt: bad id")

// TeamID identifies a team. It is random and secret among the team's members:
// outsiders see only the topic derived from it (crypto/seal.Topic).
type TeamID [32]byte

// NewTeamID returns a random team id read from rand (nil = crypto/rand).
func NewTeamID(rand io.Reader) (TeamID, error) {
	if rand == nil {
		rand = cryptoRand
	}
	var t TeamID
	if _, err := io.ReadFull(rand, t[:]); err != nil {
		return TeamID{}, fmt.Errorf("crdt: new team id: %w", err)
	}
	return t, nil
}

var cryptoRand = rand.Reader

// String returns the id as 64 lower-case hex characters.
func (t TeamID) String() string { return hex.EncodeToString(t[:]) }

// Short returns the first 8 hex characters of the id.
func (t TeamID) Short() string { return hex.EncodeToString(t[:4]) }

// LogValue logs the short form of the id.
func (t TeamID) LogValue() slog.Value { return slog.StringValue(t.Short()) }

// ParseTeamID parses the form returned by [TeamID.String].
func ParseTeamID(s string) (TeamID, error) {
	var t TeamID
	if err := parseHex(t[:], s); err != nil {
		return TeamID{}, err
	}
	return t, nil
}

// OpID names an op: the first 16 bytes (IDSize) of the SHA-256 of its
// content (Op.MarshalContent), the seal not included. See [Op.ID] for why
// 16 bytes are enough.
type OpID [IDSize]byte

// IDSize is the length of an OpID in bytes.
const IDSize = 16

// String returns the id as 32 lower-case hex characters.
func (id OpID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex characters of the id.
func (id OpID) Short() string { return hex.EncodeToString(id[:4]) }

// LogValue logs the short form of the id.
func (id OpID) LogValue() slog.Value { return slog.StringValue(id.Short()) }

// Compare orders ids bytewise: -1 if id < o, 0 if equal, +1 if id > o.
func (id OpID) Compare(o OpID) int { return bytes.Compare(id[:], o[:]) }

// ParseOpID parses the form returned by [OpID.String].
func ParseOpID(s string) (OpID, error) {
	var id OpID
	if err := parseHex(id[:], s); err != nil {
		return OpID{}, err
	}
	return id, nil
}

func parseHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("%w: want %d hex characters, got %d", ErrBadID, 2*len(dst), len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("%w: %v", ErrBadID, err)
	}
	return nil
}

var (
	_ slog.LogValuer = TeamID{}
	_ slog.LogValuer = OpID{}
)
