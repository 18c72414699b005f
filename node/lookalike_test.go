package node

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// TestLookAlikeNames: a device refuses to create a team whose name looks like one of its teams'
// ("Ward A" and "Ward А", a Cyrillic A); an admin's device refuses a joiner whose name looks like a
// member's ("Nurse Copa" and "Nurse Сора", a whole Cyrillic word); a team joined whose name looks
// like another team of the device is listed as such.
func TestLookAlikeNames(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Copa", "Nurse \u0421\u043e\u0440\u0430", "Dr Phiri")
	admin, copa, cyr, phiri := ns[0], ns[1], ns[2], ns[3]
	ward, err := admin.CreateTeam("Ward A", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateTeam("Ward \u0410", crdt.Clinical); !errors.Is(err, ErrDuplicateTeam) {
		t.Errorf("CreateTeam of a look-alike name: %v; want ErrDuplicateTeam", err)
	}
	ref := ward.ID.String()
	joinAll(t, admin, ref, copa)
	inv, err := admin.Invite(ref, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cyr.Join(context.Background(), inv.Code()); err == nil || !strings.Contains(err.Error(), "looks like") {
		t.Errorf("joining as a look-alike of a member: %v; want refused", err)
	}

	// Nurse Copa, in Dr Banda's "Ward A", joins Dr Phiri's "Ward А" (Cyrillic).
	other, err := phiri.CreateTeam("Ward \u0410", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	inv, err = phiri.Invite(other.ID.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := copa.Join(context.Background(), inv.Code()); err != nil {
		t.Fatal(err)
	}
	for _, ti := range copa.Teams() {
		if !ti.LookAlike {
			t.Errorf("team %q (%s) is not marked as looking like the other", ti.Name, ti.ID.Short())
		}
	}
	for _, ti := range admin.Teams() {
		if ti.LookAlike {
			t.Errorf("admin's only team %q is marked as a look-alike", ti.Name)
		}
	}
}
