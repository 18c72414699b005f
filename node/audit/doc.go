// Package audit is a device's audit trail: a hash-chained, append-only log of security-relevant
// events — membership changes, key epochs, filings to the health record, deletions past retention,
// subject-access exports, wipes, relay admissions — that holds no message content. An event is made
// of kinds, counts, times and short ids (the first 4 bytes of a team, device or op id, as the logs
// print them) and nothing else: it has no string field, so no message text, patient reference, team
// name or display name can be put in it by mistake.
//
// The file. DIR/audit.log, beside the encrypted store, not inside it: an append-only file is
// append-only on disk (O_APPEND, one write and fsync per event), while Badger rewrites its tables on
// every compaction (and the node compacts hourly to make deletions final), so a chain inside it
// would be append-only only by convention. The file can be copied off the device and checked later
// against the same store. Layout:
//
//	header  "FMAUDIT1" (8 bytes)
//	record  length u32 BE (of body, at most MaxRecord) | body | mac 32
//	body    version 1 (1) | seq u64 | time i64 (Unix ns) | kind 1 | team 4 | actor 4 | op 4 |
//	        epoch u32 | count u32 | subject 1 | n 1 (<= MaxChanges) | n × (action 1 | device 4)
//	mac     HMAC-SHA256(key, mac of the previous record (32 zero bytes for seq 1) ‖ body)
//
// Integers are big-endian. seq starts at 1 and grows by one. The key is 32 random bytes kept as a
// secret in the encrypted store, so whoever lacks the store's passphrase cannot forge, reorder or
// splice records: any flipped byte, deleted, reordered, duplicated or spliced record breaks a mac
// or the sequence. The head (the last seq and its mac) is anchored in the store after every append,
// so truncating the file, even at a record boundary, or replacing it with an older copy, is
// detected too. A record written but not yet anchored (a crash between the file's fsync and the
// store's) is accepted when its mac chains; a torn record after the anchored head is cut off at Open.
//
// What it does not hold against: whoever has the store's passphrase (a thief of an unlocked device)
// holds the key and can rewrite the file and the anchor together; a wiped store takes the key with
// it, so the file can no longer be checked. The events themselves are readable by anyone who can
// read the file: kinds, times, counts and short ids (see docs/security.md, "Audit trail").
//
// Main types: [Log] ([Open], [Log.Append], [Log.Verify], [Log.Events]), [Event], [Kind]; [Decode]
// reads a file's records without a key (fuzzed); [Bundle] writes events as FHIR R4 AuditEvent
// resources.
//
// Concurrency: a Log's methods are safe for concurrent use; appends are serialised.
package audit
