package export

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

// hostile is text a member or the network controls: names, texts, patient references.
const hostile = `<img src=x onerror=alert(1)>"'&`

func sample() Data {
	return Data{
		Device: strings.Repeat("ab", 32), DeviceName: hostile, Member: hostile, Made: time.Unix(1_800_000_000, 0),
		Teams: []Team{{Short: "01020304", Name: hostile, Kind: "clinical"}},
		Memberships: []Membership{{Team: "01020304", Person: strings.Repeat("cd", 32), Name: hostile, Admin: true,
			Devices: []Device{{ID: strings.Repeat("cd", 32), Label: hostile}, {ID: strings.Repeat("ef", 32), Label: "laptop"}}}},
		Messages: []Message{
			{ID: strings.Repeat("11", 32), Team: "01020304", Author: strings.Repeat("cd", 32), AuthorName: hostile,
				Time: time.Unix(1_799_000_000, 0), Text: hostile, Priority: "emergency", Patient: hostile, Received: 2, Read: 1},
			{ID: strings.Repeat("22", 32), Team: "01020304", Author: strings.Repeat("cd", 32), AuthorName: hostile,
				Time: time.Unix(1_799_000_100, 0), Text: "queued", Priority: "routine", ReplyTo: strings.Repeat("11", 32), Queued: true},
		},
	}
}

func TestBundleIsFHIR(t *testing.T) {
	for _, d := range []Data{sample(), {Patient: "MRN-1", Made: time.Unix(0, 0)}} {
		b, err := Bundle(d)
		if err != nil {
			t.Fatal(err)
		}
		fhirtest.Validate(t, b)
	}
	b, _ := Bundle(sample())
	for _, want := range []string{`"priority": "stat"`, `"status": "preparation"`, `"inResponseTo"`, `"resourceType": "Group"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("bundle lacks %s", want)
		}
	}
}

func TestHTMLEscapes(t *testing.T) {
	h, err := HTML(sample())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(h, []byte("<img")) {
		t.Fatal("the report holds unescaped markup from a message, name or reference")
	}
	if n := bytes.Count(h, []byte("&lt;img src=x onerror=alert(1)&gt;")); n < 5 {
		t.Fatalf("the hostile text appears escaped %d times; want it in every place it was given", n)
	}
}
