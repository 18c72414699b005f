// Package record is the pure half of the record gateway: what a clinical
// team's messages become in a FHIR R4 health record, and what to file next.
// It does no I/O and starts no goroutine, so the simulator and the tests run
// the same code the gateway (node/recordgw, which does the HTTP) runs.
//
// What is filed ([Due]): a message of a clinical team that carries a
// patient reference, or that its author marked for the record
// (crdt.Message.ForRecord), and that no filed op names yet.
//
// What is posted ([Profile]): one FHIR transaction Bundle per message. The
// default profile, "communication", holds a Communication (identifier: the
// op id under [OpSystem]; status completed; sent; priority mapped to FHIR's
// request-priority codes by [PriorityCode]; sender a Practitioner
// reference and recipient the team's CareTeam, both logical references by
// identifier under [DeviceSystem] and [TeamSystem]; subject the Patient;
// payload the text) and a Provenance of it. The Communication is created
// with ifNoneExist on its identifier, so a retry never makes a second one;
// the Provenance is written with PUT at an id made from the op id, so a
// retry rewrites it instead of adding one. The second profile,
// "observation", files the same message as an Observation note (LOINC
// 34109-9, "Note") with its Provenance, for record systems that take no
// Communication (OpenMRS's FHIR module, for one).
//
// Patients ([PatientTable], [PatientSearch], [ParsePatientMatch]): a
// message's patient reference is a token (a record id or a clinic-local
// code); the gateway resolves it by the deployment's mapping table, else by
// the record's own search, Patient?identifier=TOKEN. A token that matches no
// patient, or several, is held and reported, never filed against a guess.
//
// Outcomes ([ParseResponse], [Classify]): nothing is filed before the
// server answered success for every entry of the Bundle. Transport errors,
// timeouts, 408, 429 and 5xx are retried with backoff ([Queue]); 401 and 403
// are retried too (the credentials may be fixed) and reported; any other 4xx
// (400, 404, 409, 412, 422) holds the message and reports it, as does a
// success that does not account for every entry (a partial failure).
//
// [Queue] is the state machine of filing: which messages are pending, held
// or waiting for a retry, and when each may be tried again. Its entries are
// persisted by the gateway with [Entry.Marshal] and [UnmarshalEntry]
// (fuzzed): attempts, next try, the last outcome's code and HTTP status,
// and no content.
//
// Main types: [Message] (what a profile maps), [Profile], [Bundle], [Queue],
// [Entry], [Outcome].
//
// Concurrency: none of the types is safe for concurrent mutation.
package record
