package record

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
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

// withFiles is sample with a photo and a PDF attached.
func withFiles(m Message) Message {
	m.Attachments = []File{
		{Type: "image/jpeg", Data: append([]byte{0xff, 0xd8, 0xff, 0xe0}, bytes.Repeat([]byte("jpeg body "), 300)...)},
		{Type: "application/pdf", Data: []byte("%PDF-1.4 lab form\n")},
	}
	return m
}

// r4Hash is Attachment.hash as FHIR R4 defines it: the base64 of the SHA-1 of the data.
func r4Hash(data []byte) string {
	h := sha1.Sum(data)
	return base64.StdEncoding.EncodeToString(h[:])
}

// TestAttachmentsMatchR4Schema: a message's attachments are filed in both profiles, and every
// Bundle and resource is valid R4 by the official schema. Communication: one payload of
// contentAttachment per attachment, after the text, with the data, size and hash (base64 SHA-1, as
// R4 defines it) on the wire as JSON carries them. Observation: a Media for the photo (media-type
// image), a DocumentReference for the PDF, both about the patient, conditional on their own
// identifier, named by the Observation's derivedFrom and by the Provenance.
func TestAttachmentsMatchR4Schema(t *testing.T) {
	s := fhirtest.Load(t)
	m := withFiles(sample(crdt.Urgent, "Patient/p7"))
	for _, p := range Profiles {
		b, err := p.Bundle(m)
		if err != nil {
			t.Fatalf("%s: %v", p.Name(), err)
		}
		raw := b.Marshal()
		if err := s.Validate(raw); err != nil {
			t.Fatalf("%s: Bundle not valid R4: %v", p.Name(), err)
		}
		for _, e := range b.Entry {
			s.Check(t, e.Resource)
		}
		// What the server receives: decode the JSON, not our structs.
		var wire struct {
			Entry []struct {
				FullURL  string          `json:"fullUrl"`
				Resource json.RawMessage `json:"resource"`
				Request  BundleRequest   `json:"request"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(raw, &wire); err != nil {
			t.Fatal(err)
		}
		type att struct {
			ContentType, Data, Hash, Creation string
			Size                              int
		}
		checkAtt := func(where string, a att, f File) {
			t.Helper()
			data, err := base64.StdEncoding.DecodeString(a.Data)
			if err != nil || !bytes.Equal(data, f.Data) || a.ContentType != f.Type || a.Size != len(f.Data) || a.Hash != r4Hash(f.Data) || a.Creation != "2026-03-01T08:30:00.123Z" {
				t.Errorf("%s: attachment %+v (data %v) does not carry the file %s of %d bytes, hash %s", where, a, err, f.Type, len(f.Data), r4Hash(f.Data))
			}
		}
		switch p.Name() {
		case "communication":
			var c struct {
				Payload []struct {
					ContentString     *string `json:"contentString"`
					ContentAttachment *att    `json:"contentAttachment"`
				} `json:"payload"`
			}
			if err := json.Unmarshal(wire.Entry[0].Resource, &c); err != nil {
				t.Fatal(err)
			}
			if len(wire.Entry) != 2 || len(c.Payload) != 3 || c.Payload[0].ContentString == nil || *c.Payload[0].ContentString != m.Text {
				t.Fatalf("communication: %d entries, payload %s", len(wire.Entry), wire.Entry[0].Resource)
			}
			for i, f := range m.Attachments {
				if c.Payload[i+1].ContentAttachment == nil || c.Payload[i+1].ContentString != nil {
					t.Fatalf("payload %d is not one attachment", i+1)
				}
				checkAtt("communication", *c.Payload[i+1].ContentAttachment, f)
			}
		case "observation":
			if len(wire.Entry) != 4 {
				t.Fatalf("observation: %d entries; want the Observation, its Provenance and 2 attachments", len(wire.Entry))
			}
			var o struct {
				DerivedFrom []Reference `json:"derivedFrom"`
			}
			var prov struct {
				Target []Reference `json:"target"`
			}
			_ = json.Unmarshal(wire.Entry[0].Resource, &o)
			_ = json.Unmarshal(wire.Entry[1].Resource, &prov)
			for i, want := range []string{"Media", "DocumentReference"} {
				e := wire.Entry[2+i]
				var r struct {
					ResourceType string          `json:"resourceType"`
					Subject      Reference       `json:"subject"`
					Type         CodeableConcept `json:"type"`
					Content      json.RawMessage `json:"content"`
				}
				if err := json.Unmarshal(e.Resource, &r); err != nil {
					t.Fatal(err)
				}
				var a att
				if want == "Media" {
					_ = json.Unmarshal(r.Content, &a)
					if len(r.Type.Coding) != 1 || r.Type.Coding[0].Code != "image" {
						t.Errorf("Media type %+v; want media-type image", r.Type)
					}
				} else {
					var cs []struct{ Attachment att }
					_ = json.Unmarshal(r.Content, &cs)
					if len(cs) == 1 {
						a = cs[0].Attachment
					}
				}
				if r.ResourceType != want || r.Subject.Reference != "Patient/p7" || e.Request.Method != "POST" || e.Request.URL != want ||
					e.Request.IfNoneExist != "identifier="+strings.ReplaceAll(AttachmentSystem, ":", "%3A")+"%7C"+opValue(m.ID)+"%2F"+string(rune('1'+i)) {
					t.Errorf("attachment %d: %s %+v, request %+v", i+1, r.ResourceType, r.Subject, e.Request)
				}
				checkAtt(want, a, m.Attachments[i])
				if len(o.DerivedFrom) != 2 || o.DerivedFrom[i].Reference != e.FullURL || len(prov.Target) != 3 || prov.Target[1+i].Reference != e.FullURL {
					t.Errorf("attachment %d (%s) not named by derivedFrom %+v and the Provenance %+v", i+1, e.FullURL, o.DerivedFrom, prov.Target)
				}
			}
			if wire.Entry[2].FullURL == wire.Entry[3].FullURL || wire.Entry[2].FullURL == wire.Entry[0].FullURL {
				t.Errorf("fullUrls collide: %s %s %s", wire.Entry[0].FullURL, wire.Entry[2].FullURL, wire.Entry[3].FullURL)
			}
		}
	}
	// A photo alone, with no text, is filed; an empty attachment is refused.
	photo := withFiles(sample(crdt.Routine, "Patient/p7"))
	photo.Text = ""
	for _, p := range Profiles {
		b, err := p.Bundle(photo)
		if err != nil {
			t.Fatalf("%s, no text: %v", p.Name(), err)
		}
		if err := s.Validate(b.Marshal()); err != nil {
			t.Errorf("%s, no text: not valid R4: %v", p.Name(), err)
		}
		bad := withFiles(sample(crdt.Routine, "Patient/p7"))
		bad.Attachments[1].Data = nil
		if _, err := p.Bundle(bad); !errors.Is(err, ErrMapping) {
			t.Errorf("%s: an empty attachment maps (%v)", p.Name(), err)
		}
	}
	// The schema check can fail: an attachment whose size is not a number is refused.
	c, _ := Communications{}.Bundle(m)
	raw := bytes.Replace(c.Marshal(), []byte(`"size":`), []byte(`"size":"3 kB","_size":`), 1)
	if err := s.Validate(raw); err == nil {
		t.Error("the schema accepts a size that is not a number: the check cannot fail")
	}
}

// TestTooLargeAndWaitingCodes: a 413 holds the message as TooLarge; a message waiting for its
// attachments is retried with backoff and its entry round-trips through the store's encoding.
func TestTooLargeAndWaitingCodes(t *testing.T) {
	if o := Classify(413); o.Code != TooLarge || o.Code.Retried() {
		t.Errorf("413: %+v", o)
	}
	if o := ParseResponse(413, nil, 2); o.Code != TooLarge {
		t.Errorf("ParseResponse 413: %+v", o)
	}
	if !WaitingAttachments.Retried() || (Backoff{}).Wait(WaitingAttachments, 1) != DefaultBackoffMin {
		t.Error("a message waiting for its attachments is not retried after the shortest backoff")
	}
	for _, c := range []Code{WaitingAttachments, TooLarge} {
		e := Entry{Code: c, Attempts: 1, Next: 5, Queued: 1}
		got, err := UnmarshalEntry(e.Marshal())
		if err != nil || got != e {
			t.Errorf("code %v: entry %+v, %v", c, got, err)
		}
	}
}
