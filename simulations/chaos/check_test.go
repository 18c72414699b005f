package chaos

import (
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	sent := []Sent{
		{From: "d0", Text: "one", Acked: true, ID: "id1"},
		{From: "d1", Text: "two", Patient: "MRN-1", Acked: true, ID: "id2"},
		{From: "d2", Text: "lost in a kill", Err: "fieldmesh: daemon not running"},
	}
	m1 := Message{ID: "id1", Text: "one"}
	m2 := Message{ID: "id2", Text: "two", Patient: "MRN-1"}
	m3 := Message{ID: "id3", Text: "lost in a kill"}
	tests := []struct {
		name      string
		listings  map[string][]Message
		converged bool
		want      []string // substrings, one per expected problem
	}{
		{"all agree", map[string][]Message{"d0": {m1, m2}, "d1": {m1, m2}}, true, nil},
		{"a failed send that was stored, everywhere", map[string][]Message{"d0": {m1, m3, m2}, "d1": {m1, m3, m2}}, true, nil},
		{"missing acknowledged message", map[string][]Message{"d0": {m1, m2}, "d1": {m1}}, false,
			[]string{"d0 lists 2 messages and d1 1", "d1 is missing 1 of 2 acknowledged messages: id2"}},
		{"missing everywhere", map[string][]Message{"d0": {m1}, "d1": {m1}}, false,
			[]string{"d0 is missing 1", "d1 is missing 1"}},
		{"duplicate", map[string][]Message{"d0": {m1, m2, m2}, "d1": {m1, m2, m2}}, true,
			[]string{"d0 lists message id2 2 times", "d0 lists the text \"two\" 2 times", "d1 lists message id2 2 times", "d1 lists the text \"two\" 2 times"}},
		{"order differs", map[string][]Message{"d0": {m1, m2}, "d1": {m2, m1}}, false,
			[]string{"differ first at position 0"}},
		{"unknown message", map[string][]Message{"d0": {m1, m2, {ID: "idx", Text: "forged"}}, "d1": {m1, m2, {ID: "idx", Text: "forged"}}}, true,
			[]string{"d0 lists message idx with text \"forged\", which nobody sent", "d1 lists message idx"}},
		{"wrong patient", map[string][]Message{"d0": {m1, {ID: "id2", Text: "two"}}, "d1": {m1, {ID: "id2", Text: "two"}}}, true,
			[]string{"d0 lists message id2 with patient \"\"", "d1 lists message id2 with patient"}},
		{"acknowledged text under another id", map[string][]Message{"d0": {m1, {ID: "idy", Text: "two", Patient: "MRN-1"}}, "d1": {m1, {ID: "idy", Text: "two", Patient: "MRN-1"}}}, false,
			[]string{"d0 is missing", "d0 lists the text of acknowledged message id2 under another id", "d1 is missing", "d1 lists the text of acknowledged"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Converged(sent, tt.listings); got != tt.converged {
				t.Errorf("Converged = %v; want %v", got, tt.converged)
			}
			got := Check(sent, tt.listings)
			if len(got) != len(tt.want) {
				t.Fatalf("Check = %d problems:\n%s\nwant %d: %q", len(got), strings.Join(got, "\n"), len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q; want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestCheckSorted(t *testing.T) {
	sent := []Sent{{Text: "a", Acked: true, ID: "1"}, {Text: "b", Acked: true, ID: "2"}}
	got := Check(sent, map[string][]Message{"d2": nil, "d0": nil, "d1": nil})
	if !slices.IsSorted(got) || len(got) != 3 {
		t.Errorf("Check = %q; want 3 sorted problems", got)
	}
}
