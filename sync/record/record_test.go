package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

func sample(p crdt.Priority, patient string) Message {
	var m Message
	for i := range m.ID {
		m.ID[i] = byte(i + 1)
		m.Team[i] = byte(200 - i)
		m.Author[i] = byte(i * 3)
		m.Gateway[i] = byte(i * 5)
	}
	reply := m.ID
	reply[0] = 0xee
	m.AuthorName = "Dr Banda"
	m.Sent = time.Date(2026, 3, 1, 8, 30, 0, 123e6, time.UTC)
	m.Recorded = m.Sent.Add(time.Hour)
	m.Text = "Bed 4 BP 160/110 two hours after delivery"
	m.Priority = p
	m.Patient = patient
	m.ReplyTo = &reply
	return m
}

// TestProfilesMatchR4Schema: every profile's Bundle, and each resource in it, for every priority,
// with and without a patient and a reply, is valid against the official R4 JSON schema; and the
// schema check can fail (a time that is not a FHIR dateTime is refused). The schema does not list
// codes: TestMappedCodes checks those against the R4 code systems.
func TestProfilesMatchR4Schema(t *testing.T) {
	s := fhirtest.Load(t)
	for _, p := range Profiles {
		for _, prio := range []crdt.Priority{crdt.Routine, crdt.Urgent, crdt.Emergency} {
			for _, patient := range []string{"Patient/abc-1", ""} {
				m := sample(prio, patient)
				if patient == "" {
					m.ReplyTo = nil
				}
				b, err := p.Bundle(m)
				if p.Name() == "observation" && patient == "" {
					if !errors.Is(err, ErrMapping) {
						t.Errorf("%s with no patient: %v; want ErrMapping", p.Name(), err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", p.Name(), err)
				}
				if err := s.Validate(b.Marshal()); err != nil {
					t.Errorf("%s %v: Bundle not valid R4: %v\n%s", p.Name(), prio, err, b.Marshal())
				}
				for _, e := range b.Entry {
					s.Check(t, e.Resource)
				}
				if len(b.Entry) != 2 || b.Entry[0].Request.IfNoneExist != "identifier=urn%3Afieldmesh%3Aop%7C"+opValue(m.ID) {
					t.Errorf("%s: first entry not conditional on the op id: %+v", p.Name(), b.Entry[0].Request)
				}
				if b.Entry[1].Request.Method != "PUT" || b.Entry[1].Request.URL != "Provenance/"+opValue(m.ID) {
					t.Errorf("%s: Provenance not written at the op id: %+v", p.Name(), b.Entry[1].Request)
				}
			}
		}
	}
	c, _ := Communications{}.Bundle(sample(crdt.Urgent, "Patient/1"))
	comm := c.Entry[0].Resource.(Communication)
	comm.Sent = "1 March 2026"
	b, _ := json.Marshal(comm)
	if err := s.Validate(b); err == nil {
		t.Errorf("the schema accepts sent %q: the check cannot fail", comm.Sent)
	}
}

// TestMappedCodes: every priority maps to a code of FHIR's request-priority code system, and the
// statuses the profiles write are codes of theirs, as the official R4 definitions list them.
func TestMappedCodes(t *testing.T) {
	prio := fhirtest.Codes(t, "http://hl7.org/fhir/request-priority")
	for _, p := range []crdt.Priority{crdt.Routine, crdt.Urgent, crdt.Emergency} {
		if !slices.Contains(prio, PriorityCode(p)) {
			t.Errorf("priority %v maps to %q, not a request-priority code %v", p, PriorityCode(p), prio)
		}
	}
	c, _ := Communications{}.Bundle(sample(crdt.Routine, "Patient/1"))
	if st := c.Entry[0].Resource.(Communication).Status; !slices.Contains(fhirtest.Codes(t, "http://hl7.org/fhir/event-status"), st) {
		t.Errorf("Communication status %q is not an event-status code", st)
	}
	o, _ := Observations{}.Bundle(sample(crdt.Routine, "Patient/1"))
	if st := o.Entry[0].Resource.(Observation).Status; !slices.Contains(fhirtest.Codes(t, "http://hl7.org/fhir/observation-status"), st) {
		t.Errorf("Observation status %q is not an observation-status code", st)
	}
}

func TestCommunicationMapping(t *testing.T) {
	m := sample(crdt.Emergency, "Patient/p7")
	b, err := Communications{}.Bundle(m)
	if err != nil {
		t.Fatal(err)
	}
	c := b.Entry[0].Resource.(Communication)
	switch {
	case c.Priority != "stat":
		t.Errorf("priority %q; want stat", c.Priority)
	case c.Identifier[0] != Identifier{System: OpSystem, Value: opValue(m.ID)}:
		t.Errorf("identifier %+v", c.Identifier)
	case c.Subject == nil || c.Subject.Reference != "Patient/p7":
		t.Errorf("subject %+v", c.Subject)
	case c.Sender == nil || c.Sender.Type != "Practitioner" || c.Sender.Display != "Dr Banda":
		t.Errorf("sender %+v", c.Sender)
	case len(c.Recipient) != 1 || c.Recipient[0].Type != "CareTeam":
		t.Errorf("recipient %+v", c.Recipient)
	case c.Payload[0].ContentString != m.Text || c.Sent != "2026-03-01T08:30:00.123Z" || c.Status != "completed":
		t.Errorf("payload/sent/status %+v", c)
	}
	if PriorityCode(crdt.Routine) != "routine" || PriorityCode(crdt.Urgent) != "urgent" {
		t.Errorf("priority codes")
	}
	for _, bad := range []Message{{Text: " "}, {Text: "x", Patient: "Jane Doe"}, {Text: "x", Patient: "Practitioner/1"}} {
		if _, err := (Communications{}).Bundle(bad); !errors.Is(err, ErrMapping) {
			t.Errorf("Bundle(%+v): %v; want ErrMapping", bad, err)
		}
	}
	if _, err := ProfileByName("nope"); err == nil {
		t.Errorf("unknown profile accepted")
	}
	if p, err := ProfileByName(""); err != nil || p.Name() != DefaultProfile {
		t.Errorf("default profile: %v, %v", p, err)
	}
}

func TestDue(t *testing.T) {
	f := &crdt.FiledView{Ref: "Communication/1"}
	cases := []struct {
		kind crdt.TeamKind
		m    crdt.MessageView
		want bool
	}{
		{crdt.Clinical, crdt.MessageView{Message: crdt.Message{Patient: "P1"}}, true},
		{crdt.Clinical, crdt.MessageView{Message: crdt.Message{ForRecord: true}}, true},
		{crdt.Clinical, crdt.MessageView{Message: crdt.Message{}}, false},
		{crdt.Social, crdt.MessageView{Message: crdt.Message{Patient: "P1", ForRecord: true}}, false},
		{crdt.Clinical, crdt.MessageView{Message: crdt.Message{Patient: "P1"}, Filed: f}, false},
	}
	for i, c := range cases {
		if got := Due(c.kind, c.m); got != c.want {
			t.Errorf("case %d: Due %v; want %v", i, got, c.want)
		}
	}
}

func TestParseResponse(t *testing.T) {
	ok := `{"resourceType":"Bundle","type":"transaction-response","entry":[
		{"response":{"status":"201 Created","location":"Communication/abc/_history/1"}},
		{"response":{"status":"200","location":"Provenance/x"}}]}`
	if o := ParseResponse(200, []byte(ok), 2); o.Code != Filed || o.Ref != "Communication/abc" {
		t.Errorf("success: %+v", o)
	}
	full := strings.Replace(ok, "Communication/abc", "https://record.example/fhir/Communication/abc", 1)
	if o := ParseResponse(200, []byte(full), 2); o.Code != Filed || o.Ref != "Communication/abc" {
		t.Errorf("absolute location: %+v", o)
	}
	partial := strings.Replace(ok, `"200"`, `"422"`, 1)
	cases := map[string]struct {
		status int
		body   string
		n      int
		want   Code
	}{
		"one entry failed":  {200, partial, 2, Partial},
		"entries missing":   {200, ok, 3, Partial},
		"not a bundle":      {200, `{"resourceType":"OperationOutcome"}`, 2, Partial},
		"not json":          {200, `<html>`, 2, Partial},
		"bad location":      {200, strings.Replace(ok, "Communication/abc", "Communication/a b", 1), 2, Partial},
		"no location":       {200, strings.Replace(ok, `,"location":"Communication/abc/_history/1"`, "", 1), 2, Partial},
		"unprocessable":     {422, `{}`, 2, Rejected},
		"precondition":      {412, ``, 2, Rejected},
		"server error":      {503, ``, 2, ServerError},
		"too many requests": {429, ``, 2, ServerError},
		"unauthorized":      {401, ``, 2, Unauthorized},
		"redirect":          {302, ``, 2, Partial},
	}
	for name, c := range cases {
		if o := ParseResponse(c.status, []byte(c.body), c.n); o.Code != c.want {
			t.Errorf("%s: %v; want %v", name, o.Code, c.want)
		}
	}
}

func TestParsePatientMatch(t *testing.T) {
	one := `{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Patient","id":"p1"},"search":{"mode":"match"}},{"resource":{"resourceType":"OperationOutcome"},"search":{"mode":"outcome"}}]}`
	if ref, o := ParsePatientMatch(200, []byte(one)); ref != "Patient/p1" || o.Code != Filed {
		t.Errorf("one match: %q %+v", ref, o)
	}
	two := `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"p1"}},{"resource":{"resourceType":"Patient","id":"p2"}}]}`
	if _, o := ParsePatientMatch(200, []byte(two)); o.Code != AmbiguousPatient {
		t.Errorf("two matches: %+v", o)
	}
	if _, o := ParsePatientMatch(200, []byte(`{"resourceType":"Bundle","total":0}`)); o.Code != NoPatient {
		t.Errorf("no match: %+v", o)
	}
	if _, o := ParsePatientMatch(200, []byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"a/b"}}]}`)); o.Code != Partial {
		t.Errorf("bad id: %+v", o)
	}
	if _, o := ParsePatientMatch(500, nil); o.Code != ServerError {
		t.Errorf("500: %+v", o)
	}
	if got := PatientSearch("urn:clinic|A 1&x"); got != "Patient?identifier=urn%3Aclinic%7CA+1%26x" {
		t.Errorf("PatientSearch: %s", got)
	}
}

func TestPatientTable(t *testing.T) {
	tab, err := ParsePatientTable([]byte("# clinic codes\nK-17\tPatient/a1\n\nK-18   Patient/b2\n"))
	if err != nil || tab["K-17"] != "Patient/a1" || tab["K-18"] != "Patient/b2" || len(tab) != 2 {
		t.Fatalf("table %v, %v", tab, err)
	}
	for _, bad := range []string{"K-17\n", "K-17 Practitioner/1\n", "K-17 Patient/1\nK-17 Patient/2\n", "K-1 Patient/a b c\n", strings.Repeat("x", 200) + " Patient/1\n"} {
		_, err := ParsePatientTable([]byte(bad))
		if err == nil {
			t.Errorf("table %q accepted", bad)
		} else if strings.Contains(err.Error(), "K-17") {
			t.Errorf("error shows a token: %v", err)
		}
	}
}

func TestQueue(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q := NewQueue(Backoff{})
	var team crdt.TeamID
	id := func(b byte) crdt.OpID { var o crdt.OpID; o[0] = b; return o }
	ch := q.Sync(team, []crdt.OpID{id(1), id(2), id(3)}, now)
	if len(ch.Put) != 3 || q.Len() != 3 {
		t.Fatalf("sync: %+v", ch)
	}
	if got := q.Next(now, 2); len(got) != 2 {
		t.Fatalf("next: %d", len(got))
	}
	q.Done(team, id(1), now, Outcome{Code: Unreachable})
	q.Done(team, id(2), now, Outcome{Code: Rejected, Status: 422})
	if ch := q.Done(team, id(3), now, Outcome{Code: Filed, Ref: "Communication/3"}); len(ch.Delete) != 1 || q.Len() != 2 {
		t.Fatalf("filed entry kept: %+v", ch)
	}
	if got := q.Next(now, 10); len(got) != 0 {
		t.Errorf("entries due right after failing: %+v", got)
	}
	if got := q.Next(now.Add(DefaultBackoffMin), 10); len(got) != 1 || got[0].ID != id(1) {
		t.Errorf("after the backoff: %+v; want the unreachable one only", got)
	}
	if got := q.Next(now.Add(DefaultBackoffHeld), 10); len(got) != 2 {
		t.Errorf("after a day: %+v; want the held one too", got)
	}
	for i := 0; i < 20; i++ {
		q.Done(team, id(1), now, Outcome{Code: ServerError, Status: 503})
	}
	if w, _ := q.Wait(now); w != DefaultBackoffMax {
		t.Errorf("backoff after 21 failures: %v; want the cap %v", w, DefaultBackoffMax)
	}
	if ch := q.Sync(team, []crdt.OpID{id(2)}, now); len(ch.Delete) != 1 || ch.Delete[0].ID != id(1) {
		t.Errorf("no longer due not dropped: %+v", ch)
	}
	e := q.Entries()[0]
	if e.Code != Rejected || e.Status != 422 || e.Attempts != 1 {
		t.Errorf("entry %+v", e)
	}
	got, err := UnmarshalEntry(e.Marshal())
	if err != nil || got != e {
		t.Errorf("entry round trip: %+v, %v", got, err)
	}
}

func FuzzUnmarshalEntry(f *testing.F) {
	f.Add(Entry{Code: Rejected, Status: 422, Attempts: 3, Next: 5, Queued: 1}.Marshal())
	f.Add(make([]byte, EntrySize))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalEntry(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatalf("decode-encode not identity")
		}
	})
}

func FuzzParsePatientTable(f *testing.F) {
	f.Add([]byte("K-17\tPatient/a1\n# x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := ParsePatientTable(b)
		if err != nil {
			return
		}
		for tok, ref := range tab {
			if tok == "" || !validPatientRef(ref) {
				t.Fatalf("table holds %q -> %q", tok, ref)
			}
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"201","location":"Communication/a"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o := ParseResponse(200, b, 1)
		if o.Code == Filed && !crdt.ValidRecordRef(o.Ref) {
			t.Fatalf("filed with reference %q", o.Ref)
		}
		ref, p := ParsePatientMatch(200, b)
		if p.Code == Filed && !validPatientRef(ref) {
			t.Fatalf("patient %q", ref)
		}
	})
}
