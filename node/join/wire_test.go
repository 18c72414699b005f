package join

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fieldmesh/fieldmesh/crypto/epochkey"
	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

// testPrekey is a valid prekey's public half (not of small order).
func testPrekey(t testing.TB) identity.NoisePublic {
	p, err := epochkey.NewPrekey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return p.Public
}

func TestWireRoundTrip(t *testing.T) {
	req := request{Device: [32]byte{9}, Name: "Nurse Phiri", Prekey: testPrekey(t)}
	if got, err := unmarshalRequest(req.marshal()); err != nil || got != req {
		t.Errorf("request round trip: %+v, %v; want %+v", got, err, req)
	}
	a := answer{Admission: Admission{Team: crdt.TeamID{3}, Genesis: crdt.OpID{4},
		History: []device.HistoryItem{{Op: []byte{1, 2}, Env: []byte{3}}, {Op: []byte{4}, Env: []byte{}}}}}
	got, err := unmarshalAnswer(a.marshal())
	if err != nil || got.Team != a.Team || got.Genesis != a.Genesis || len(got.History) != 2 ||
		!bytes.Equal(got.History[0].Op, a.History[0].Op) || !bytes.Equal(got.History[0].Env, a.History[0].Env) ||
		!bytes.Equal(got.History[1].Op, a.History[1].Op) || len(got.History[1].Env) != 0 {
		t.Errorf("answer round trip: %+v, %v; want %+v", got, err, a)
	}
	if got, err := unmarshalAnswer(answer{Refusal: "no"}.marshal()); err != nil || got.Refusal != "no" {
		t.Errorf("refusal round trip: %+v, %v", got, err)
	}
}

func TestWireRefuses(t *testing.T) {
	pk := testPrekey(t)
	req := request{Name: "Nurse Phiri", Prekey: pk}.marshal()
	if _, err := unmarshalRequest(req); err != nil {
		t.Fatalf("the valid request is refused: %v", err)
	}
	nonMinimal := append(append([]byte(nil), req[:33]...), 0x8b, 0x00)
	nonMinimal = append(nonMinimal, "Nurse Phiri"...)
	nonMinimal = append(nonMinimal, pk[:]...)
	long := request{Name: strings.Repeat("n", crdt.MaxNameLen+1), Prekey: pk}.marshal()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"other version", append([]byte{1}, req[1:]...)},
		{"no prekey (version 1's layout)", req[:len(req)-32]},
		{"prekey of small order", request{Name: "Nurse Phiri"}.marshal()},
		{"truncated", req[:len(req)-1]},
		{"trailing", append(req, 0)},
		{"non-minimal length", nonMinimal},
		{"name too long", long},
	} {
		if _, err := unmarshalRequest(tc.b); err == nil {
			t.Errorf("request %s: accepted", tc.name)
		}
	}
	ans := answer{Admission: Admission{History: []device.HistoryItem{{Op: []byte{1}}}}}.marshal()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"other version", append([]byte{2}, ans[1:]...)},
		{"unknown status", append([]byte{answerVersion, 2}, ans[2:]...)},
		{"truncated", ans[:len(ans)-1]},
		{"trailing", append(ans, 0)},
		{"history too long", append(append([]byte(nil), ans[:66]...), 0xa1, 0x8d, 0x06)}, // 100001 items
	} {
		if _, err := unmarshalAnswer(tc.b); err == nil {
			t.Errorf("answer %s: accepted", tc.name)
		}
	}
}

// TestRefusalCut: a reason longer than a refusal holds is cut at a character boundary, so the
// answer still decodes.
func TestRefusalCut(t *testing.T) {
	reason := strings.Repeat("é", maxReason) // two bytes each
	got, err := unmarshalAnswer(answer{Refusal: "x" + reason}.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Refusal) > maxReason || len(got.Refusal) < maxReason-1 || !utf8.ValidString(got.Refusal) ||
		!strings.HasPrefix("x"+reason, got.Refusal) {
		t.Errorf("a long reason became %d bytes %q; want at most %d bytes of its start", len(got.Refusal), got.Refusal, maxReason)
	}
}

func FuzzJoinMessages(f *testing.F) {
	f.Add(request{Name: "Nurse Phiri", Prekey: testPrekey(f)}.marshal())
	f.Add(answer{Admission: Admission{Team: crdt.TeamID{3}, History: []device.HistoryItem{{Op: []byte{1, 2}, Env: []byte{3}}, {Op: []byte{4}}}}}.marshal())
	f.Add(answer{Refusal: "invite code already used"}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := unmarshalRequest(b); err == nil {
			if !bytes.Equal(r.marshal(), b) {
				t.Fatal("request is not canonical")
			}
		}
		if a, err := unmarshalAnswer(b); err == nil && (a.Refusal != "refused" || len(b) > 3) {
			// An empty reason decodes as "refused"; every other answer is canonical.
			if !bytes.Equal(a.marshal(), b) {
				t.Fatal("answer is not canonical")
			}
		}
	})
}
