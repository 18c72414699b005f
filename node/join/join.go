package join

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flynn/noise"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// Protocol is the libp2p protocol id of the join stream.
const Protocol = "/fieldmesh/join/9.0.0"

// Timeout bounds one exchange, dial included. Ask and Serve do not enforce it: the caller sets it as
// the deadline of the stream.
const Timeout = 30 * time.Second

const (
	prologue  = "fieldmesh/join/2"
	frameMax  = 4096     // bytes of a handshake message
	chunkMax  = 60000    // plaintext bytes per Noise transport message (Noise's limit is 65535)
	answerMax = 16 << 20 // bytes of a whole answer
)

// ErrRefused matches every error that says the inviter refused the join (errors.Is); such an error is
// a *RefusedError.
var ErrRefused = errors.New("join: the inviter refused")

// RefusedError is a refusal with its reason. An Inviter returns one (Refuse) to refuse a joiner; Ask
// returns one when the inviter refused, with the inviter's reason.
type RefusedError struct {
	Reason string
}

// Refuse returns a refusal with reason, which Serve sends to the joiner.
func Refuse(reason string) error { return &RefusedError{Reason: reason} }

func (e *RefusedError) Error() string { return ErrRefused.Error() + ": " + e.Reason }

// Is reports whether target is ErrRefused.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Joiner is a device asking to join, as the inviter knows it once the handshake has proved the code:
// its device id (the key its connection is authenticated with), its Noise static key (the key the
// team seals to it as a member) and the display name it asked for, at most crdt.MaxNameLen bytes.
type Joiner struct {
	Device identity.DeviceID
	Noise  identity.NoisePublic
	Name   string
	// Prekey is the one-time key the commit that adds the joiner seals its box to (its side holds the
	// private half: device.Config.JoinPrekey), so that not even its first epoch is boxed to its static key.
	Prekey identity.NoisePublic
}

// Admission is what an admitted joiner receives: the team's id, its genesis op id, and its membership
// history (device.Team.History), which holds the commit that adds the joiner.
type Admission struct {
	Team    crdt.TeamID
	Genesis crdt.OpID
	History []device.HistoryItem
}

// Inviter is what Serve asks of the inviter's device: its open invites and its membership rules.
// Serve calls it from the goroutine Serve runs on.
type Inviter interface {
	// Invite returns the stored record (Record.Marshal) of the open invite id without consuming it,
	// or an error (ErrInviteUnknown when there is none). Serve ends the exchange without an answer
	// when it fails.
	Invite(id [16]byte) ([]byte, error)
	// Vet refuses a joiner before its invite is consumed, so that it can correct what was wrong (its
	// name) and use the same code again. The error's text is the refusal's reason.
	Vet(j Joiner) error
	// Use consumes the invite id. Of any number of calls for one invite, concurrent or not, at most
	// one succeeds.
	Use(id [16]byte) error
	// Admit records j in rec's team — as a new person, or for a link invite as a device of
	// rec.Person — and returns the admission. A *RefusedError (Refuse) refuses j with its reason;
	// any other error refuses it with a generic reason, and is the Inviter's to report.
	Admit(rec Record, j Joiner) (Admission, error)
}

func handshake(self *identity.Device, initiator bool, psk []byte) (*noise.HandshakeState, error) {
	if psk == nil {
		// The responder learns which invite (hence which key) from the first message.
		psk = make([]byte, 32)
	}
	return noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(identity.DH25519, noise.CipherChaChaPoly, noise.HashSHA256),
		Pattern:               noise.HandshakeXX,
		Initiator:             initiator,
		Prologue:              []byte(prologue),
		PresharedKey:          psk,
		PresharedKeyPlacement: 3,
		StaticKeypair:         self.NoiseKey(),
	})
}

// Ask runs the joiner's end of an exchange over rw: it proves to the inviter that it holds inv's
// secret, introduces self under name, and returns the admission. When the inviter refused, the error
// is a *RefusedError. Ask checks the answer's form only; device.Join judges its contents. The caller
// owns rw, and bounds the exchange with a deadline (Timeout).
func Ask(rw io.ReadWriter, self *identity.Device, name string, prekey identity.NoisePublic, inv Invite) (Admission, error) {
	br := bufio.NewReader(rw)
	hs, err := handshake(self, true, inv.Secret[:])
	if err != nil {
		return Admission{}, fmt.Errorf("join: handshake: %w", err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, inv.ID[:])
	if err != nil {
		return Admission{}, fmt.Errorf("join: handshake: %w", err)
	}
	if err := framing.Write(rw, msg1); err != nil {
		return Admission{}, fmt.Errorf("join: %w", err)
	}
	msg2, err := framing.Read(br, frameMax)
	if err != nil {
		return Admission{}, Refuse("the invite code is unknown, already used or expired")
	}
	if _, _, _, err := hs.ReadMessage(nil, msg2); err != nil {
		return Admission{}, fmt.Errorf("join: handshake: %w", err)
	}
	req := request{Device: self.ID(), Name: name, Prekey: prekey}
	msg3, _, recv, err := hs.WriteMessage(nil, req.marshal())
	if err != nil {
		return Admission{}, fmt.Errorf("join: handshake: %w", err)
	}
	if err := framing.Write(rw, msg3); err != nil {
		return Admission{}, fmt.Errorf("join: %w", err)
	}
	var pt []byte
	for {
		msg, err := framing.Read(br, chunkMax+64)
		if err != nil {
			if pt == nil {
				return Admission{}, Refuse("the invite code is wrong, already used or expired")
			}
			return Admission{}, fmt.Errorf("join: answer: %w", err)
		}
		chunk, err := recv.Decrypt(nil, nil, msg)
		if err != nil || len(chunk) == 0 {
			return Admission{}, errors.New("join: answer: bad message")
		}
		pt = append(pt, chunk[1:]...)
		if len(pt) > answerMax {
			return Admission{}, errors.New("join: answer: too large")
		}
		if chunk[0] == 0 {
			break
		}
	}
	a, err := unmarshalAnswer(pt)
	if err != nil {
		return Admission{}, err
	}
	if a.Refusal != "" {
		return Admission{}, Refuse(a.Refusal)
	}
	return a.Admission, nil
}

// Server runs the inviter's end of exchanges. Device and Invites are required.
type Server struct {
	// Device is this device: its Noise key is the handshake's static key.
	Device *identity.Device
	// Invites is the device's view of its invites and teams.
	Invites Inviter
	// Now is the clock that decides whether an invite has expired. Nil is time.Now.
	Now func() time.Time
}

// Serve runs one exchange over rw with a peer whose connection is authenticated as device conn (the
// zero id matches no joiner). It returns nil once it has sent an answer, an admission or a refusal.
// An error means it sent none — the peer did not prove it holds an open invite's secret, sent a
// malformed message, or rw failed — and the caller should reset the stream. The caller owns rw, and
// bounds the exchange with a deadline (Timeout).
//
// The joiner is refused, in this order, when its device id is not conn, when Invites.Vet refuses it
// (the invite stays open), when the invite was used already, when it has expired by Now, and when
// Invites.Admit refuses it. The first two leave the invite open.
func (s *Server) Serve(rw io.ReadWriter, conn identity.DeviceID) error {
	br := bufio.NewReader(rw)
	msg1, err := framing.Read(br, frameMax)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	hs, err := handshake(s.Device, false, nil)
	if err != nil {
		return fmt.Errorf("join: handshake: %w", err)
	}
	idb, _, _, err := hs.ReadMessage(nil, msg1)
	if err != nil || len(idb) != 16 {
		return errors.New("join: malformed first message")
	}
	id := [16]byte(idb)
	recb, err := s.Invites.Invite(id)
	if err != nil {
		return err
	}
	rec, err := unmarshalRecord(recb)
	if err != nil {
		return err
	}
	if err := hs.SetPresharedKey(rec.Secret[:]); err != nil {
		return fmt.Errorf("join: handshake: %w", err)
	}
	msg2, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return fmt.Errorf("join: handshake: %w", err)
	}
	if err := framing.Write(rw, msg2); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	msg3, err := framing.Read(br, frameMax)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	reqb, _, send, err := hs.ReadMessage(nil, msg3)
	if err != nil {
		return fmt.Errorf("join: handshake failed (wrong invite secret?): %w", err)
	}
	req, err := unmarshalRequest(reqb)
	if err != nil {
		return err
	}
	j := Joiner{Device: req.Device, Name: req.Name, Prekey: req.Prekey}
	if len(hs.PeerStatic()) != len(j.Noise) {
		return errors.New("join: handshake: no peer static key")
	}
	copy(j.Noise[:], hs.PeerStatic())

	refuse := func(reason string) error { return writeAnswer(rw, send, answer{Refusal: reason}) }
	if conn == (identity.DeviceID{}) || req.Device != conn {
		return refuse("device id does not match the connection's key")
	}
	if err := s.Invites.Vet(j); err != nil {
		return refuse(err.Error())
	}
	// Consume the invite now that the handshake proved the code: a second use finds nothing.
	if err := s.Invites.Use(id); err != nil {
		return refuse("invite code already used")
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	if !now().Before(rec.Expires) {
		return refuse("invite code has expired")
	}
	adm, err := s.Invites.Admit(rec, j)
	if err != nil {
		var r *RefusedError
		if !errors.As(err, &r) {
			r = &RefusedError{Reason: "the inviter could not admit this device"}
		}
		return refuse(r.Reason)
	}
	return writeAnswer(rw, send, answer{Admission: adm})
}

// writeAnswer sends a as Noise transport messages of at most chunkMax plaintext bytes, each
// "more" byte | chunk.
func writeAnswer(w io.Writer, cs *noise.CipherState, a answer) error {
	b := a.marshal()
	for {
		chunk := b[:min(len(b), chunkMax)]
		b = b[len(chunk):]
		more := byte(0)
		if len(b) > 0 {
			more = 1
		}
		ct, err := cs.Encrypt(nil, nil, append([]byte{more}, chunk...))
		if err != nil {
			return fmt.Errorf("join: answer: %w", err)
		}
		if err := framing.Write(w, ct); err != nil {
			return fmt.Errorf("join: answer: %w", err)
		}
		if more == 0 {
			return nil
		}
	}
}
