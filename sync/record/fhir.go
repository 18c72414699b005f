package record

import (
	"crypto/sha1"
	"crypto/sha256"
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
	// AttachmentSystem names one attachment of a message (the observation profile's Media or
	// DocumentReference): its message's op id in hex, "/", and its number from 1.
	AttachmentSystem = "urn:fieldmesh:attachment"
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
	// Attachments are the message's attachments, whole and checked against their manifests: the
	// gateway files a message only once it holds all of them.
	Attachments []File
}

// File is one attachment of a message, as the gateway holds it.
type File struct {
	Type string // media type, e.g. image/jpeg
	Data []byte
}

// attachment is f as a FHIR R4 Attachment: contentType, data (base64, as encoding/json writes a
// []byte), size, hash (the base64 SHA-1 of the data, as R4 defines Attachment.hash) and creation
// (when the message that carries it was sent; the re-encoded photo is made then). No title: a
// message's attachments carry no file name.
func attachment(f File, created time.Time) *Attachment {
	h := sha1.Sum(f.Data) // R4 defines Attachment.hash as SHA-1; the manifests use SHA-256
	return &Attachment{ContentType: f.Type, Data: f.Data, Size: len(f.Data), Hash: h[:], Creation: fhirTime(created)}
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
	// Payload is one Communication.payload: the text, or one attachment.
	Payload struct {
		ContentString     string      `json:"contentString,omitempty"`
		ContentAttachment *Attachment `json:"contentAttachment,omitempty"`
	}
	// Attachment is FHIR R4's Attachment data type.
	Attachment struct {
		ContentType string `json:"contentType"`
		Data        []byte `json:"data"`
		Size        int    `json:"size"`
		Hash        []byte `json:"hash"`
		Title       string `json:"title,omitempty"`
		Creation    string `json:"creation,omitempty"`
	}
	// Media is FHIR R4's Media resource: one photo, video or sound recording.
	Media struct {
		ResourceType    string           `json:"resourceType"`
		Identifier      []Identifier     `json:"identifier"`
		Status          string           `json:"status"`
		Type            *CodeableConcept `json:"type,omitempty"`
		Subject         *Reference       `json:"subject,omitempty"`
		CreatedDateTime string           `json:"createdDateTime,omitempty"`
		Operator        *Reference       `json:"operator,omitempty"`
		Content         Attachment       `json:"content"`
	}
	// DocumentReference is FHIR R4's DocumentReference, as much of it as holds one document.
	DocumentReference struct {
		ResourceType string                     `json:"resourceType"`
		Identifier   []Identifier               `json:"identifier"`
		Status       string                     `json:"status"`
		Subject      *Reference                 `json:"subject,omitempty"`
		Date         string                     `json:"date,omitempty"`
		Author       []Reference                `json:"author,omitempty"`
		Content      []DocumentReferenceContent `json:"content"`
	}
	DocumentReferenceContent struct {
		Attachment Attachment `json:"attachment"`
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
		ValueString       string          `json:"valueString,omitempty"`
		DerivedFrom       []Reference     `json:"derivedFrom,omitempty"`
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
	for i, f := range m.Attachments {
		if len(f.Data) == 0 || f.Type == "" {
			return fmt.Errorf("%w: attachment %d is empty", ErrMapping, i+1)
		}
	}
	switch {
	case strings.TrimSpace(m.Text) == "" && len(m.Attachments) == 0:
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
func provenance(m Message, fullURL string, more []string) BundleEntry {
	id := opValue(m.ID)
	targets := []Reference{{Reference: fullURL}}
	for _, u := range more {
		targets = append(targets, Reference{Reference: u})
	}
	p := Provenance{
		ResourceType: "Provenance",
		ID:           id,
		Target:       targets,
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

// transaction is the Bundle that files resource (of type typ, at the fullUrl full), then its
// Provenance, then the extra entries (the observation profile's attachments), which the
// Provenance names too.
func transaction(m Message, typ, full string, resource any, extra []BundleEntry) Bundle {
	var more []string
	for _, e := range extra {
		more = append(more, e.FullURL)
	}
	b := Bundle{
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
			provenance(m, full, more),
		},
	}
	b.Entry = append(b.Entry, extra...)
	return b
}

// fullURL is the Bundle's internal fullUrl of the filed resource.
func fullURL(m Message) string { return "urn:uuid:" + uuidOf(m.ID) }

// attachmentUUID makes a version-4-shaped UUID for attachment i (from 0) of message id: the
// SHA-256 of the op id and the number, so it differs from the message's and from the others'.
func attachmentUUID(id crdt.OpID, i int) string {
	h := sha256.Sum256(append(append([]byte("fieldmesh attachment "), id[:]...), byte(i)))
	var op crdt.OpID
	copy(op[:], h[:])
	return uuidOf(op)
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
	}
	if strings.TrimSpace(m.Text) != "" {
		c.Payload = append(c.Payload, Payload{ContentString: m.Text})
	}
	for _, f := range m.Attachments {
		c.Payload = append(c.Payload, Payload{ContentAttachment: attachment(f, m.Sent)})
	}
	if m.Patient != "" {
		c.Subject = &Reference{Reference: m.Patient}
	}
	if m.ReplyTo != nil {
		c.InResponseTo = []Reference{{Type: "Communication", Identifier: &Identifier{System: OpSystem, Value: opValue(*m.ReplyTo)}}}
	}
	return transaction(m, "Communication", fullURL(m), c, nil), nil
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
	var extra []BundleEntry
	for i, f := range m.Attachments {
		e := fileEntry(m, i, f)
		o.DerivedFrom = append(o.DerivedFrom, Reference{Reference: e.FullURL})
		extra = append(extra, e)
	}
	return transaction(m, "Observation", fullURL(m), o, extra), nil
}

// mediaTypes are the media types R4's Media holds, by the prefix of their media type, with
// their code in http://terminology.hl7.org/CodeSystem/media-type.
var mediaTypes = map[string]string{"image/": "image", "video/": "video", "audio/": "audio"}

// fileEntry is attachment i (from 0) of m in the observation profile: a Media for a photo, video or
// sound recording, a DocumentReference for anything else (a PDF lab form), created with
// ifNoneExist on its identifier (AttachmentSystem) so a retry makes no second one.
func fileEntry(m Message, i int, f File) BundleEntry {
	ident := []Identifier{{System: AttachmentSystem, Value: fmt.Sprintf("%s/%d", opValue(m.ID), i+1)}}
	subject := &Reference{Reference: m.Patient}
	var res any
	typ := "DocumentReference"
	code := ""
	for prefix, c := range mediaTypes {
		if strings.HasPrefix(f.Type, prefix) {
			code = c
		}
	}
	if code != "" {
		typ = "Media"
		res = Media{
			ResourceType: "Media", Identifier: ident, Status: "completed",
			Type:            &CodeableConcept{Coding: []Coding{{System: "http://terminology.hl7.org/CodeSystem/media-type", Code: code}}},
			Subject:         subject,
			CreatedDateTime: fhirTime(m.Sent),
			Operator:        sender(m),
			Content:         *attachment(f, m.Sent),
		}
	} else {
		res = DocumentReference{
			ResourceType: "DocumentReference", Identifier: ident, Status: "current", Subject: subject,
			Date: fhirTime(m.Sent), Author: []Reference{*sender(m)},
			Content: []DocumentReferenceContent{{Attachment: *attachment(f, m.Sent)}},
		}
	}
	return BundleEntry{
		FullURL:  "urn:uuid:" + attachmentUUID(m.ID, i),
		Resource: res,
		Request: &BundleRequest{
			Method: "POST", URL: typ,
			IfNoneExist: "identifier=" + url.QueryEscape(ident[0].System+"|"+ident[0].Value),
		},
	}
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
