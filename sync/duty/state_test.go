package duty

import (
	"slices"
	"testing"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
)

// FuzzTrackerState: a stored tracker state that restores marshals back to the same bytes, and
// RestoreState never panics.
func FuzzTrackerState(f *testing.F) {
	tr := NewTracker(identity.DeviceID{1}, 0)
	f.Add(tr.MarshalState())
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr := NewTracker(identity.DeviceID{1}, 0)
		if err := tr.RestoreState(b); err != nil {
			return
		}
		if got := tr.MarshalState(); !slices.Equal(got, b) {
			t.Fatalf("restore-marshal not identity:\n in %x\nout %x", b, got)
		}
	})
}
