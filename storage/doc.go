// Package storage is fieldmesh's local store: a Badger v4 database encrypted
// at rest, with typed keyspaces for sealed envelopes, team state, local
// secrets, peers and one-time invites, and a crypto-shredding wipe. It
// implements the storage section of the foundation API contract
// and imports nothing else of fieldmesh.
//
// # Layout on disk
//
//	DIR/keyring   the wrapped data key (98 bytes, mode 0600)
//	DIR/db/       Badger's files, all encrypted with the data key
//
// Create draws a random 32-byte data key and hands it to Badger through
// WithEncryptionKey (AES-256; Badger derives and rotates its own per-file data
// keys under it, in DIR/db/KEYREGISTRY). The data key itself is stored only in
// DIR/keyring, sealed with XChaCha20-Poly1305 under a key-encryption key
// KEK = Argon2id(passphrase, salt). The keyring records the Argon2id
// parameters, so they can change between stores:
//
//	version 1 | time u32 | memory KiB u32 | threads u8 | salt 16 | nonce 24 | sealed key 48
//
// The first 50 bytes are the AEAD's associated data. Defaults: time 3,
// memory 64 MiB, threads 2 (Options.KDF overrides them at Create; tests use
// cheap values). A failed open of the seal is ErrWrongPassphrase and happens
// before Badger is opened, so a wrong passphrase changes nothing on disk. The
// keyring is written atomically: temporary file, fsync, rename, fsync of DIR.
// Create writes it last, so a crash during Create leaves no store.
//
// # Keyspaces
//
// The first byte of every Badger key names its keyspace:
//
//	0x00 meta        0x00 "version"                    -> schema version (5: envelopes of format version 8)
//	0x01 secrets     0x01 | name                       -> opaque secret
//	0x02 envelopes   0x02 | topic 16 | time u64 BE | id 16 -> marshalled envelope
//	0x03 envelope id 0x03 | id 16                      -> topic 16 | time u64 BE
//	0x04 teams       0x04 | team id 32                 -> opaque team state
//	0x05 peers       0x05 | peer key                   -> opaque peer blob
//	0x06 invites     0x06 | invite id 16               -> opaque invite
//	0x10 usage       0x10 | day | topic | protocol | peer -> byte counters (see usage.go)
//	0x11 outbox      0x11 | ...                        -> ops deferred by low-data mode (see usage.go)
//	0x12 settings    0x12 | name                       -> small local settings
//	0x20 ops         0x20 | team id 32 | time u64 BE | id 16 -> an opened op (see ops.go)
//	0x30 collect     0x30                              -> nothing: written and dropped by Collect
//	0x40 chunks      0x40 | address 32                 -> a sealed attachment chunk (see chunks.go)
//	0x41 chunk owner 0x41 | owner 16 | address 32      -> nothing: the chunks of a message
//	0x42 owner index 0x42 | address 32 | owner 16      -> nothing: the messages of a chunk
//	0x43 chunk held  0x43 | owner 16 | holder          -> nothing: a relay holds all of a message's chunks
//	0x44 evicted     0x44 | owner 16                   -> nothing: a message's chunks were evicted
//
// Big-endian time after the topic makes a prefix scan of a topic return its
// envelopes in (time, id) order, which is what set reconciliation walks. The
// id index makes HasEnvelope, Envelope(id) and de-duplication across topics
// one point lookup each.
//
// # Durability
//
// SyncWrites is on: every write method returns only after Badger has synced
// its write-ahead log, because on a phone a dead battery is a power loss.
// PutEnvelopes writes a whole batch in one transaction, so one sync; a batch
// larger than one Badger transaction (15% of the memtable, about 1.2 MiB of
// inline data or 13,000 entries; each envelope is two entries) is split into
// consecutive transactions, each atomic and durable.
//
// # Phone tuning
//
// Badger's defaults target servers (64 MiB memtables, 256 MiB block cache,
// 1 GiB value-log files). Here:
//
//	MemTableSize            8 MiB   a day of a busy team is a few MiB; small memtables bound RAM and replay time
//	NumMemtables            2       one being written, one being flushed
//	BlockCacheSize          4 MiB   recent topics' blocks; every miss costs an AES decrypt, so not zero
//	IndexCacheSize          4 MiB   required by Badger with encryption; holds table indexes and bloom filters
//	ValueLogFileSize        16 MiB  mmapped at twice this size (virtual, not resident); caps one value at 16 MiB
//	ValueThreshold          1 MiB   Badger's maximum: every value stays inline in the LSM tree, so
//	                                compaction alone removes deleted ones and the value log holds
//	                                nothing (see Deletion)
//	NumCompactors           2       the minimum Badger accepts; phones have few cores
//	NumLevelZeroTables      2       flush to L1 early: fewer tables to search per read
//	NumLevelZeroTablesStall 6       stall writers before L0 piles up
//	NumGoroutines           2       Badger's stream workers (unused by us today)
//	Compression             none    values are ciphertext and do not compress
//	Metrics                 off     no global expvar registration
//
// Badger's warnings and errors go to Options.Logger; its info and debug
// messages are dropped.
//
// # Wipe
//
// (*Store).Wipe and Wipe(dir) crypto-shred: they overwrite and delete the
// keyring and fsync DIR first — after that no copy of the data key exists and
// DIR/db is ciphertext nobody can read — then remove DIR/db. Overwriting the
// keyring is best effort (flash wear levelling and copy-on-write file systems
// may keep old blocks, which are still sealed under the passphrase).
//
// # Concurrency
//
// A Store is safe for concurrent use. Reads run in Badger snapshot
// transactions. The two read-modify-write operations (PutEnvelopes, UseInvite)
// are serialised by a mutex; plain puts are not. Close and Wipe wait for calls
// in progress, after which every method returns ErrClosed; so an Envelopes
// callback must not call Close or Wipe. One process per DIR: Badger's
// directory lock refuses a second Open.
//
// # Deletion
//
// DeleteOps, DeleteEnvelopes and the other deletions write tombstones: until
// the next Collect, the deleted values stay in the files as older versions,
// readable by anyone with the data key (a thief with the passphrase).
// Collect flushes the memtables (their write-ahead .mem files are removed)
// and compacts every level into one, so tombstones meet every older version
// and drop them; it then runs value-log GC, which finds nothing since no
// value goes there. Writes wait during the flush; reads go on. Pending says
// how many deletions (and secrets written over) wait for a Collect; the node
// runs one every Config.CollectEvery (1 h) when any do. TestDeletionIsFinal reads every
// version of every key with the store's key after Collect and finds none of
// the deleted texts (its control, without Collect, finds them).
//
// # Caveats
//
// Collect removes files; it cannot make the flash forget their blocks. Those
// are ciphertext under the data key, so a thief who has the passphrase and
// recovers freed blocks below the file system could still read them: that
// needs a per-item key destroyed at deletion (the wire-format issue's
// forward secrecy), not storage. The audit keyspace of DESIGN.md comes with
// a later issue.
package storage
