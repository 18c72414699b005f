package identity

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flynn/noise"
)

// detRand returns a deterministic reader for tests.
func detRand(seed byte) io.Reader {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

func mustGenerate(t testing.TB, seed byte) *Device {
	t.Helper()
	d, err := Generate(detRand(seed))
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return d
}

func TestGenerateDeterministic(t *testing.T) {
	a, b := mustGenerate(t, 1), mustGenerate(t, 1)
	if !a.Equal(b) {
		t.Errorf("same seed: got different devices; want equal")
	}
	if got, want := a.ID(), b.ID(); got != want {
		t.Errorf("ID: got %v; want %v", got, want)
	}
	c := mustGenerate(t, 2)
	if a.Equal(c) || a.ID() == c.ID() || a.NoisePublic() == c.NoisePublic() {
		t.Errorf("different seeds: got equal keys; want different")
	}
	if _, err := Generate(nil); err != nil {
		t.Errorf("Generate(nil): got %v; want nil", err)
	}
	if _, err := Generate(bytes.NewReader(make([]byte, 63))); err == nil {
		t.Errorf("Generate(short reader): got nil error; want error")
	}
}

func TestSignVerify(t *testing.T) {
	d := mustGenerate(t, 1)
	other := mustGenerate(t, 2)
	msg := []byte("fieldmesh/test\x00hello")
	sig := d.Sign(msg)
	if got, want := len(sig), ed25519.SignatureSize; got != want {
		t.Fatalf("len(sig): got %d; want %d", got, want)
	}
	tamperedSig := bytes.Clone(sig)
	tamperedSig[10] ^= 1
	tests := []struct {
		name string
		id   DeviceID
		msg  []byte
		sig  []byte
		want bool
	}{
		{"valid", d.ID(), msg, sig, true},
		{"other id", other.ID(), msg, sig, false},
		{"other msg", d.ID(), []byte("hello"), sig, false},
		{"tampered sig", d.ID(), msg, tamperedSig, false},
		{"short sig", d.ID(), msg, sig[:63], false},
		{"long sig", d.ID(), msg, append(bytes.Clone(sig), 0), false},
		{"nil sig", d.ID(), msg, nil, false},
		{"zero id", DeviceID{}, msg, sig, false},
	}
	for _, tt := range tests {
		if got := Verify(tt.id, tt.msg, tt.sig); got != tt.want {
			t.Errorf("%s: Verify got %v; want %v", tt.name, got, tt.want)
		}
	}
	// The signing key is the libp2p identity key: its public half is the id.
	if got, want := DeviceID(d.SigningKey().Public().(ed25519.PublicKey)), d.ID(); got != want {
		t.Errorf("SigningKey public: got %v; want %v", got, want)
	}
	id := d.ID()
	if got, want := id.PublicKey(), ed25519.PublicKey(id[:]); !got.Equal(want) {
		t.Errorf("PublicKey: got %x; want %x", got, want)
	}
}

func TestMarshalRoundtrip(t *testing.T) {
	d := mustGenerate(t, 3)
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(b), 65; got != want {
		t.Fatalf("len: got %d; want %d", got, want)
	}
	if got, want := b[0], byte(1); got != want {
		t.Errorf("version: got %d; want %d", got, want)
	}
	d2, err := UnmarshalDevice(b)
	if err != nil {
		t.Fatalf("UnmarshalDevice: %v", err)
	}
	if !d.Equal(d2) || d.ID() != d2.ID() || d.NoisePublic() != d2.NoisePublic() {
		t.Errorf("roundtrip: got a different device; want the same")
	}
	for _, tt := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", b[:64]},
		{"long", append(bytes.Clone(b), 0)},
		{"version 0", append([]byte{0}, b[1:]...)},
		{"version 2", append([]byte{2}, b[1:]...)},
	} {
		if _, err := UnmarshalDevice(tt.b); !errors.Is(err, ErrBadDevice) {
			t.Errorf("%s: got %v; want ErrBadDevice", tt.name, err)
		}
	}
}

func TestNoiseKey(t *testing.T) {
	d := mustGenerate(t, 4)
	k := d.NoiseKey()
	if got, want := k.Public, d.NoisePublic(); !bytes.Equal(got, want[:]) {
		t.Errorf("Public: got %x; want %x", got, want)
	}
	// The public key is the X25519 of the private key with the base point,
	// as computed by flynn/noise's own implementation.
	pub, err := noise.DH25519.DH(k.Private, []byte{9, 31: 0})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, k.Public) {
		t.Errorf("derived public: got %x; want %x", pub, k.Public)
	}
	// Copies: changing the returned slices does not change the device.
	k.Private[0] ^= 0xff
	if bytes.Equal(d.NoiseKey().Private, k.Private) {
		t.Errorf("NoiseKey returned an alias of the private key; want a copy")
	}
	sk := d.SigningKey()
	sk[0] ^= 0xff
	if bytes.Equal(d.SigningKey(), sk) {
		t.Errorf("SigningKey returned an alias; want a copy")
	}
}

func TestRedacted(t *testing.T) {
	d := mustGenerate(t, 5)
	seed := d.SigningKey().Seed()
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "dev", d, "id", d.ID())
	outputs := []string{
		d.String(),
		fmt.Sprint(d),
		fmt.Sprintf("%v %+v %#v %s", d, d, d, d),
		logs.String(),
	}
	for _, out := range outputs {
		if strings.Contains(out, fmt.Sprintf("%x", seed[:4])) || strings.Contains(out, fmt.Sprintf("%x", d.NoiseKey().Private[:4])) {
			t.Errorf("output leaks key material: %q", out)
		}
	}
	if got, want := d.String(), "[redacted]"; got != want {
		t.Errorf("String: got %q; want %q", got, want)
	}
	if got, want := logs.String(), "id="+d.ID().Short(); !strings.Contains(got, want) {
		t.Errorf("log: got %q; want it to contain %q", got, want)
	}
}

func TestIDStrings(t *testing.T) {
	var id DeviceID
	for i := range id {
		id[i] = byte(i)
	}
	if got, want := id.String(), "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"; got != want {
		t.Errorf("String: got %q; want %q", got, want)
	}
	if got, want := id.Short(), "00010203"; got != want {
		t.Errorf("Short: got %q; want %q", got, want)
	}
	if got, want := id.LogValue().String(), "00010203"; got != want {
		t.Errorf("LogValue: got %q; want %q", got, want)
	}
	tests := []struct {
		in      string
		want    DeviceID
		wantErr bool
	}{
		{id.String(), id, false},
		{strings.ToUpper(id.String()), id, false},
		{"", DeviceID{}, true},
		{id.String()[:62], DeviceID{}, true},
		{id.String() + "00", DeviceID{}, true},
		{"zz" + id.String()[2:], DeviceID{}, true},
	}
	for _, tt := range tests {
		got, err := ParseDeviceID(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseDeviceID(%q): got %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadDeviceID) {
			t.Errorf("ParseDeviceID(%q): got %v; want ErrBadDeviceID", tt.in, err)
		}
	}
	np := NoisePublic(id)
	if got, err := ParseNoisePublic(np.String()); err != nil || got != np {
		t.Errorf("ParseNoisePublic: got %v, %v; want %v, nil", got, err, np)
	}
	if _, err := ParseNoisePublic("00"); !errors.Is(err, ErrBadNoisePublic) {
		t.Errorf("ParseNoisePublic(short): got %v; want ErrBadNoisePublic", err)
	}
}

func FuzzUnmarshalDevice(f *testing.F) {
	d, _ := Generate(detRand(1))
	b, _ := d.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := UnmarshalDevice(b)
		if err != nil {
			return
		}
		got, err := d.MarshalBinary()
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("re-marshal: got %x, %v; want %x", got, err, b)
		}
	})
}

func TestNoisePublicCheck(t *testing.T) {
	d, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.NoisePublic().Check(); err != nil {
		t.Fatalf("a fresh key: %v", err)
	}
	// Small-order points of Curve25519 in u-coordinate form (RFC 7748 section 5 and the list
	// libsodium refuses), little-endian: 0, 1, the two points of order 8, p-1, p and p+1.
	weak := []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	}
	for _, h := range weak {
		p, err := ParseNoisePublic(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Check(); !errors.Is(err, ErrWeakNoisePublic) {
			t.Errorf("%s...: Check = %v, want ErrWeakNoisePublic", h[:8], err)
		}
	}
}
