package relayproto

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
)

// goldenDevice is a device whose keys come from seed (deterministic, for known answers and tests).
func goldenDevice(t testing.TB, seed byte) *identity.Device {
	t.Helper()
	d, err := identity.Generate(bytes.NewReader(bytes.Repeat([]byte{seed}, 128)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func signed(t testing.TB, signer *identity.Device, topic envelope.Topic, seq uint64, members, admins []identity.DeviceID) *Roster {
	t.Helper()
	ro := NewRoster(topic, seq, members, admins)
	ro.Sign(signer.ID(), signer.Sign)
	got, err := ParseRoster(ro.Marshal())
	if err != nil {
		t.Fatalf("ParseRoster of a roster just signed: %v", err)
	}
	return got
}

func TestRoster(t *testing.T) {
	admin, other, member, removed := goldenDevice(t, 1), goldenDevice(t, 2), goldenDevice(t, 3), goldenDevice(t, 4)
	topic := envelope.Topic{9}
	first := signed(t, admin, topic, 1, []identity.DeviceID{member.ID(), removed.ID(), member.ID()}, []identity.DeviceID{admin.ID(), other.ID()})
	if !first.IsMember(admin.ID()) || !first.IsAdmin(other.ID()) || !first.IsMember(removed.ID()) || first.IsAdmin(member.ID()) || len(first.Members) != 4 {
		t.Fatalf("roster: admins %v members %v", first.Admins, first.Members)
	}
	if !Admits(nil, admin.ID(), first) {
		t.Error("the first roster, signed by the code's admin, is refused")
	}
	if Admits(nil, other.ID(), first) {
		t.Error("the first roster is taken though the code names another admin")
	}
	fromMember := signed(t, member, topic, 2, []identity.DeviceID{member.ID()}, []identity.DeviceID{member.ID()})
	if Admits(nil, admin.ID(), fromMember) || Admits(first, admin.ID(), fromMember) {
		t.Error("a roster signed by a plain member is taken")
	}
	next := signed(t, other, topic, 2, []identity.DeviceID{member.ID()}, []identity.DeviceID{admin.ID(), other.ID()})
	if !Admits(first, admin.ID(), next) {
		t.Error("a newer roster signed by another admin of the held one is refused")
	}
	if next.IsMember(removed.ID()) {
		t.Error("the removed device is on the newer roster")
	}
	if Admits(next, admin.ID(), first) || Admits(next, admin.ID(), next) {
		t.Error("an older or the same roster replaces the held one (replay)")
	}
	if Admits(first, admin.ID(), signed(t, admin, envelope.Topic{8}, 5, []identity.DeviceID{admin.ID()}, []identity.DeviceID{admin.ID()})) {
		t.Error("another topic's roster is taken")
	}

	b := next.Marshal()
	for _, i := range []int{1, 17, 30, len(b) - 70, len(b) - 1} {
		bad := bytes.Clone(b)
		bad[i] ^= 1
		if _, err := ParseRoster(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("roster with byte %d flipped: %v; want ErrMalformed", i, err)
		}
	}
	unsorted := NewRoster(topic, 3, nil, []identity.DeviceID{admin.ID()})
	unsorted.Members = []identity.DeviceID{member.ID(), admin.ID()}
	if bytes.Compare(member.ID().PublicKey(), admin.ID().PublicKey()) < 0 {
		unsorted.Members = []identity.DeviceID{admin.ID(), member.ID(), admin.ID()}
	}
	unsorted.Sign(admin.ID(), admin.Sign)
	if _, err := ParseRoster(unsorted.Marshal()); !errors.Is(err, ErrMalformed) {
		t.Errorf("unsorted roster: %v; want ErrMalformed", err)
	}
	notMember := NewRoster(topic, 3, []identity.DeviceID{member.ID()}, []identity.DeviceID{admin.ID()})
	notMember.Members = []identity.DeviceID{member.ID()}
	notMember.Sign(admin.ID(), admin.Sign)
	if _, err := ParseRoster(notMember.Marshal()); !errors.Is(err, ErrMalformed) {
		t.Errorf("roster whose admin is not a member: %v; want ErrMalformed", err)
	}
}

func FuzzParseRoster(f *testing.F) {
	admin := goldenDevice(f, 1)
	ro := NewRoster(envelope.Topic{1}, 1, []identity.DeviceID{goldenDevice(f, 2).ID()}, []identity.DeviceID{admin.ID()})
	ro.Sign(admin.ID(), admin.Sign)
	f.Add(ro.Marshal())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRoster(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatalf("roster does not re-encode to its input")
		}
	})
}
