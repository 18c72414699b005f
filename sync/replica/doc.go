// Package replica is a sans-I/O model of one fieldmesh device's copy of one
// team, for tests and for the (later) simulator: the same crdt, envelope
// and reconciliation code a node runs, with a map for storage, a clock
// function for time and plain calls for the network. It owns no goroutine,
// socket, timer or disk, so thousands of replicas run in one process under
// virtual time, and every run replays from its inputs.
//
// Main types:
//   - [Replica]: a device identity, the team's epoch key, a map-backed store
//     of sealed envelopes (what the device acknowledged), the crdt.Log
//     built from them and a crdt.Clock on the device's (possibly skewed)
//     wall clock. [Replica.Publish] (and Send, Ack, AddMember, Create) makes
//     an op as a node does: Clock.Next, Log.HeadsBefore, sign, seal, store,
//     add. [Replica.Accept] validates a received envelope (decode, topic,
//     epoch, open, crdt.Log.Check) and stores it only if valid.
//     [Replica.Restart] drops everything in memory and rebuilds it from the
//     store. Replica implements [Source] over its store.
//   - [Source], [Item], [Session], [Protocol]: the shape of a reconciliation
//     protocol (sync/catchup today, sync/recon next), with tiny adapters
//     from each package's own Item and Source types. [Catchup] is
//     sync/catchup's "send every id".
//   - [Reconcile]: runs an initiator and a responder session against each
//     other in memory until both are done, delivering what each receives to
//     its replica, with optional [Faults] (drop, duplicate, reorder). A
//     session error or a rejected envelope ends the run with an error, as a
//     node drops a peer that sends garbage.
//
// The convergence property test of issue #4 lives here
// (TestConvergence: random schedules of partitions, merges, faults,
// restarts, skewed clocks and garbage-sending replicas); its file comment
// says how to run and replay it.
//
// Concurrency: a Replica is not safe for concurrent use; distinct replicas
// are independent (crdt's verified-signature memo is shared and locked).
//
// Caveats: one epoch key per replica (key rotation comes with membership,
// issue #3); Restart rebuilds from the store, so "acknowledged" means
// "stored", as in the node, where the store is fsynced before Send returns.
package replica
