package record

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Identifier systems of what fieldmesh names in the record.
const (
	// OpSystem names a message: the value is its op id, 32 hex digits.
	OpSystem = "urn:fieldmesh:op"
	// DeviceSystem names a member device (the sender): its device id, hex.
	DeviceSystem = "urn:fieldmesh:device"
	// TeamSystem names a team: its team id, hex. The team's name is not sent.
	TeamSystem = "urn:fieldmesh:team"
)

// ErrMapping is returned for a message a profile cannot map (no patient
// reference resolved, empty text, ...).
var ErrMapping = errors.New("record: message cannot be mapped")

// Message is what a profile maps: one message, as the gateway's device
// shows it, with its patient resolved.
type Message struct {
	ID         crdt.OpID
	Team       crdt.TeamID
	Author     identity.DeviceID
	AuthorName string // the sender's display name in the team
	Sent       time.Time
	Text       string
	Priority   crdt.Priority
	// Patient is the resolved patient, a FHIR relative reference
	// "Patient/id"; empty for a message filed for the record with no
	// patient reference (profiles that need a subject refuse it).
	Patient string
	ReplyTo *crdt.OpID
	// Gateway is the device that files it (Provenance's assembler).
	Gateway identity.DeviceID
	// Recorded is when the gateway files it (Provenance.recorded).
	Recorded time.Time
}

// PriorityCode maps a message priority to FHIR's request-priority codes
// (http://hl7.org/fhir/request-priority): routine → routine, urgent →
// urgent, emergency → stat.
func PriorityCode(p crdt.Priority) string {
	switch p {
	case crdt.Urgent:
		return "urgent"
	case crdt.Emergency:
		return "stat"
	}
	return "routine"
}

// FHIR R4 data types, as much of them as the profiles use.
type (
	Identifier struct {
		System string `json:"system,omitempty"`
		Value  string `json:"value,omitempty"`
	}
	Reference struct {
		Reference  string      `json:"reference,omitempty"`
		Type       string      `json:"type,omitempty"`
		Identifier *Identifier `json:"identifier,omitempty"`
		Display    string      `json:"display,omitempty"`
	}
	Coding struct {
		System  string `json:"system,omitempty"`
		Code    string `json:"code,omitempty"`
		Display string `json:"display,omitempty"`
	}
	CodeableConcept struct {
		Coding []Coding `json:"coding,omitempty"`
		Text   string   `json:"text,omitempty"`
	}
	Payload struct {
		ContentString string `json:"contentString"`
	}
	Communication struct {
		ResourceType string       `json:"resourceType"`
		Identifier   []Identifier `json:"identifier"`
		InResponseTo []Reference  `json:"inResponseTo,omitempty"`
		Status       string       `json:"status"`
		Priority     string       `json:"priority,omitempty"`
		Subject      *Reference   `json:"subject,omitempty"`
		Sent         string       `json:"sent,omitempty"`
		Recipient    []Reference  `json:"recipient,omitempty"`
		Sender       *Reference   `json:"sender,omitempty"`
		Payload      []Payload    `json:"payload"`
	}
	Annotation struct {
		Text string `json:"text"`
	}
	Observation struct {
		ResourceType      string          `json:"resourceType"`
		Identifier        []Identifier    `json:"identifier"`
		Status            string          `json:"status"`
		Code              CodeableConcept `json:"code"`
		Subject           *Reference      `json:"subject,omitempty"`
		EffectiveDateTime string          `json:"effectiveDateTime,omitempty"`
		Issued            string          `json:"issued,omitempty"`
		Performer         []Reference     `json:"performer,omitempty"`
		ValueString       string          `json:"valueString"`
	}
	ProvenanceAgent struct {
		Type *CodeableConcept `json:"type,omitempty"`
		Who  Reference        `json:"who"`
	}
	Provenance struct {
		ResourceType string            `json:"resourceType"`
		ID           string            `json:"id"`
		Target       []Reference       `json:"target"`
		OccurredAt   string            `json:"occurredDateTime,omitempty"`
		Recorded     string            `json:"recorded"`
		Agent        []ProvenanceAgent `json:"agent"`
	}
	BundleRequest struct {
		Method      string `json:"method"`
		URL         string `json:"url"`
		IfNoneExist string `json:"ifNoneExist,omitempty"`
	}
	BundleEntry struct {
		FullURL  string         `json:"fullUrl,omitempty"`
		Resource any            `json:"resource"`
		Request  *BundleRequest `json:"request"`
	}
	// Bundle is a FHIR transaction Bundle.
	Bundle struct {
		ResourceType string        `json:"resourceType"`
		Type         string        `json:"type"`
		Entry        []BundleEntry `json:"entry"`
	}
)

// Marshal returns b as JSON.
func (b Bundle) Marshal() []byte {
	out, err := json.Marshal(b)
	if err != nil {
		panic(fmt.Sprintf("record: a Bundle does not marshal: %v", err)) // only our own types are in it
	}
	return out
}

// Profile maps a message to the transaction Bundle that files it.
type Profile interface {
	// Name is the profile's name, as --profile takes it.
	Name() string
	// Bundle returns the Bundle that files m; its first entry is the
	// resource whose reference the filed op records. It returns an error
	// wrapping ErrMapping for a message the profile cannot file.
	Bundle(m Message) (Bundle, error)
}

// Profiles are the mapping profiles, by name; the first is the default.
var Profiles = []Profile{Communications{}, Observations{}}

// DefaultProfile is the name of the default profile.
const DefaultProfile = "communication"

// ProfileByName returns the named profile ("" is the default).
func ProfileByName(name string) (Profile, error) {
	if name == "" {
		name = DefaultProfile
	}
	for _, p := range Profiles {
		if p.Name() == name {
			return p, nil
		}
	}
	names := make([]string, len(Profiles))
	for i, p := range Profiles {
		names[i] = p.Name()
	}
	return nil, fmt.Errorf("record: no mapping profile %q (there are: %s)", name, strings.Join(names, ", "))
}

func fhirTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// opValue is the identifier value of a message: its op id in hex.
func opValue(id crdt.OpID) string { return hex.EncodeToString(id[:]) }

// uuidOf makes a version-4-shaped UUID from the op id (the Bundle's
// internal fullUrl of the filed resource).
func uuidOf(id crdt.OpID) string {
	var u [16]byte
	copy(u[:], id[:16])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func sender(m Message) *Reference {
	return &Reference{Type: "Practitioner", Identifier: &Identifier{System: DeviceSystem, Value: hex.EncodeToString(m.Author[:])}, Display: m.AuthorName}
}

func team(m Message) Reference {
	return Reference{Type: "CareTeam", Identifier: &Identifier{System: TeamSystem, Value: hex.EncodeToString(m.Team[:])}}
}

func check(m Message, needPatient bool) error {
	switch {
	case strings.TrimSpace(m.Text) == "":
		return fmt.Errorf("%w: empty text", ErrMapping)
	case needPatient && m.Patient == "":
		return fmt.Errorf("%w: no patient", ErrMapping)
	case m.Patient != "" && !validPatientRef(m.Patient):
		return fmt.Errorf("%w: patient reference is not Patient/id", ErrMapping)
	}
	return nil
}

func validPatientRef(ref string) bool {
	return strings.HasPrefix(ref, "Patient/") && crdt.ValidRecordRef(ref)
}

// provenance is the Provenance of the filed resource at fullURL, written
// with PUT at the op id so a retry rewrites it.
func provenance(m Message, fullURL string) BundleEntry {
	id := opValue(m.ID)
	p := Provenance{
		ResourceType: "Provenance",
		ID:           id,
		Target:       []Reference{{Reference: fullURL}},
		OccurredAt:   fhirTime(m.Sent),
		Recorded:     fhirTime(m.Recorded),
		Agent: []ProvenanceAgent{
			{
				Type: &CodeableConcept{Coding: []Coding{{System: "http://terminology.hl7.org/CodeSystem/provenance-participant-type", Code: "author", Display: "Author"}}},
				Who:  *sender(m),
			},
			{
				Type: &CodeableConcept{Coding: []Coding{{System: "http://terminology.hl7.org/CodeSystem/provenance-participant-type", Code: "assembler", Display: "Assembler"}}},
				Who:  Reference{Type: "Device", Identifier: &Identifier{System: DeviceSystem, Value: hex.EncodeToString(m.Gateway[:])}, Display: "fieldmesh record gateway"},
			},
		},
	}
	return BundleEntry{Resource: p, Request: &BundleRequest{Method: "PUT", URL: "Provenance/" + id}}
}

func transaction(m Message, typ string, resource any) Bundle {
	full := "urn:uuid:" + uuidOf(m.ID)
	return Bundle{
		ResourceType: "Bundle",
		Type:         "transaction",
		Entry: []BundleEntry{
			{
				FullURL:  full,
				Resource: resource,
				Request: &BundleRequest{
					Method:      "POST",
					URL:         typ,
					IfNoneExist: "identifier=" + url.QueryEscape(OpSystem+"|"+opValue(m.ID)),
				},
			},
			provenance(m, full),
		},
	}
}

// Communications is the default profile: a Communication and its
// Provenance (see the package doc).
type Communications struct{}

// Name returns "communication".
func (Communications) Name() string { return "communication" }

// Bundle maps m.
func (Communications) Bundle(m Message) (Bundle, error) {
	if err := check(m, false); err != nil {
		return Bundle{}, err
	}
	c := Communication{
		ResourceType: "Communication",
		Identifier:   []Identifier{{System: OpSystem, Value: opValue(m.ID)}},
		Status:       "completed",
		Priority:     PriorityCode(m.Priority),
		Sent:         fhirTime(m.Sent),
		Recipient:    []Reference{team(m)},
		Sender:       sender(m),
		Payload:      []Payload{{ContentString: m.Text}},
	}
	if m.Patient != "" {
		c.Subject = &Reference{Reference: m.Patient}
	}
	if m.ReplyTo != nil {
		c.InResponseTo = []Reference{{Type: "Communication", Identifier: &Identifier{System: OpSystem, Value: opValue(*m.ReplyTo)}}}
	}
	return transaction(m, "Communication", c), nil
}

// Observations is the second profile: an Observation note (LOINC 34109-9)
// and its Provenance. An Observation needs a subject: a message with no
// patient is refused (ErrMapping) and held.
type Observations struct{}

// Name returns "observation".
func (Observations) Name() string { return "observation" }

// Bundle maps m.
func (Observations) Bundle(m Message) (Bundle, error) {
	if err := check(m, true); err != nil {
		return Bundle{}, err
	}
	o := Observation{
		ResourceType:      "Observation",
		Identifier:        []Identifier{{System: OpSystem, Value: opValue(m.ID)}},
		Status:            "final",
		Code:              CodeableConcept{Coding: []Coding{{System: "http://loinc.org", Code: "34109-9", Display: "Note"}}, Text: "Team message (" + PriorityCode(m.Priority) + ")"},
		Subject:           &Reference{Reference: m.Patient},
		EffectiveDateTime: fhirTime(m.Sent),
		Issued:            fhirTime(m.Recorded),
		Performer:         []Reference{*sender(m)},
		ValueString:       m.Text,
	}
	return transaction(m, "Observation", o), nil
}

// Due reports whether a message of a team of the given kind is to be filed:
// in a clinical team, one that carries a patient reference or that its
// author marked for the record, and that no filed op names.
func Due(kind crdt.TeamKind, m crdt.MessageView) bool {
	return kind == crdt.Clinical && m.Filed == nil && (m.Patient != "" || m.ForRecord)
}

// DueIDs returns the ids of the messages of s that are Due, in display order.
func DueIDs(s *crdt.State) []crdt.OpID {
	var out []crdt.OpID
	for _, m := range s.Messages {
		if Due(s.Kind, m) {
			out = append(out, m.ID)
		}
	}
	return slices.Clip(out)
}
