package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Message is one line of `fieldmesh messages TEAM --json`, the fields the checker reads.
type Message struct {
	ID      string `json:"id"`
	Author  string `json:"author"`
	HLC     uint64 `json:"hlc"`
	Text    string `json:"text"`
	Patient string `json:"patient"`
}

// Sent is one `fieldmesh send` the run made.
type Sent struct {
	From    string // device label
	Text    string
	Patient string // "" when the message had none
	// Acked is true when send exited 0 and printed an id: the message was durably stored on its
	// device, so it must reach every member. A send that failed (its daemon was being killed, or
	// down) may or may not have stored the message before the failure.
	Acked bool
	ID    string // set when Acked
	Err   string // set when not Acked: the one-line error
}

// Converged reports whether every device lists the same messages in the same order and that list
// holds every acknowledged message. It is the condition the run waits for after healing.
func Converged(sent []Sent, listings map[string][]Message) bool {
	var first []string
	i := 0
	for _, msgs := range listings {
		ids := make([]string, len(msgs))
		for j, m := range msgs {
			ids[j] = m.ID
		}
		if i == 0 {
			first = ids
		} else if !slices.Equal(ids, first) {
			return false
		}
		i++
	}
	have := make(map[string]bool, len(first))
	for _, id := range first {
		have[id] = true
	}
	for _, s := range sent {
		if s.Acked && !have[s.ID] {
			return false
		}
	}
	return true
}

// Check compares the devices' listings (by device label) with what was sent and returns one line
// per problem, sorted; none means the run kept its promise:
//   - every acknowledged message is listed on every device, exactly once, with the text and
//     patient reference it was sent with;
//   - a message whose send failed is listed at most once per device (it may have been stored);
//   - nothing is listed that nobody sent;
//   - every device lists the same messages in the same order.
func Check(sent []Sent, listings map[string][]Message) []string {
	var problems []string
	byText := make(map[string]Sent, len(sent))
	acked := map[string]Sent{}
	for _, s := range sent {
		byText[s.Text] = s
		if s.Acked {
			acked[s.ID] = s
		}
	}
	labels := make([]string, 0, len(listings))
	for l := range listings {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for _, l := range labels {
		count := map[string]int{}
		texts := map[string]int{}
		for _, m := range listings[l] {
			count[m.ID]++
			texts[m.Text]++
			s, ok := byText[m.Text]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s lists message %s with text %q, which nobody sent", l, short(m.ID), m.Text))
			case s.Acked && s.ID != m.ID:
				problems = append(problems, fmt.Sprintf("%s lists the text of acknowledged message %s under another id, %s", l, short(s.ID), short(m.ID)))
			case s.Patient != m.Patient:
				problems = append(problems, fmt.Sprintf("%s lists message %s with patient %q; it was sent with %q", l, short(m.ID), m.Patient, s.Patient))
			}
		}
		for id, n := range count {
			if n > 1 {
				problems = append(problems, fmt.Sprintf("%s lists message %s %d times", l, short(id), n))
			}
		}
		for text, n := range texts {
			if n > 1 {
				problems = append(problems, fmt.Sprintf("%s lists the text %q %d times (under different ids)", l, text, n))
			}
		}
		var missing []string
		for id := range acked {
			if count[id] == 0 {
				missing = append(missing, short(id))
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			problems = append(problems, fmt.Sprintf("%s is missing %d of %d acknowledged messages: %s",
				l, len(missing), len(acked), clip(missing, 8)))
		}
	}
	for _, l := range labels[min(1, len(labels)):] {
		a, b := listings[labels[0]], listings[l]
		i := 0
		for i < len(a) && i < len(b) && a[i].ID == b[i].ID {
			i++
		}
		if i < len(a) || i < len(b) {
			problems = append(problems, fmt.Sprintf("%s lists %d messages and %s %d; the orders differ first at position %d",
				labels[0], len(a), l, len(b), i))
		}
	}
	sort.Strings(problems)
	return problems
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func clip(s []string, n int) string {
	if len(s) > n {
		return strings.Join(s[:n], " ") + fmt.Sprintf(" and %d more", len(s)-n)
	}
	return strings.Join(s, " ")
}
