// Package device is the sans-I/O core of a fieldmesh device: one [Team] per
// team a device belongs to, holding the team's log (sync/crdt), its key
// state (sync/teamkeys) and its clock, and every rule a device follows: what
// it accepts, keeps, carries and passes on, when it commits, re-keys and
// destroys keys, and how it batches acknowledgements. It does no I/O and
// starts no goroutine: each call takes the time (and, through Config, the
// randomness) as input and returns [Effects] — what to store in one atomic
// write, what to gossip, which peers to reconcile with or ban — the way
// sync/recon's Session does. The node (package node) is its I/O shell; the
// property tests and the simulator drive the same object.
//
// # Judge, then learn, store, relay, show
//
// A received envelope ([Team.Receive]) is decoded, opened as far as this
// device can without spending a key (teamkeys: outer layer and the
// author's signature, then the inner layer with senderkey's Peek), and
// held until it can be judged: its parents are known, and its epoch is
// learned or held. Judging adds the held ops to the log on trial and keeps
// the ones that count by the membership rules (docs/membership.md): valid
// commits, and messages and acks by members, inside a removed member's
// partition window only when witnessed; plus whatever those build on. Only
// then are a commit's epoch keys learned (and the prior keys of the epochs
// the log's commits name), message keys spent, envelopes and ops stored,
// and the clock moved (by counting ops only). What does not count stays
// held until it expires; what no honest peer passes on is Rejected and
// counts against the peer that sent it, never against the peers that
// relayed an author's valid-looking mistake.
//
// # Costs an outsider cannot impose
//
// Envelopes from peers that are neither members nor enrolled relays are
// refused with no cryptography at all. A commit's boxes are tried (one
// X25519 multiplication each) only for members and relays, within a
// per-peer budget ([Team.BoxWanted] lets the caller try them outside its
// lock). Held envelopes are bounded in number and time.
//
// # Disagreeing about membership
//
// Devices sync only with peers they believe are members ([Team.MaySync]).
// A removed device cannot open the commit that removes it, so it would
// never learn of its removal by syncing; and two devices can each hold a
// removal the other lacks. When a sync is refused for that reason, the two
// exchange their membership ops ([Team.MembershipFor],
// [Team.AcceptMembership]): each op is sealed by its author and judged by
// the receiver's own rules, so a removed device shows that it was removed
// and stops writing, and a device that was wrong shows the other as a
// member again.
//
// # Durability
//
// A call that returns Effects with a non-empty Write has already changed
// the Team: the caller makes the Write durable before it gossips or tells
// the user, and if the write fails it discards the Team and restores it
// from its store with [New]. An op of this device is acknowledged once its
// Write is durable.
//
// # Alerts
//
// The core decides when the user is alerted (package sync/duty: duty
// hours, on-call escalation, emergency repeats, review reminders) and
// returns content-free alerts: Tick's Effects.Alerts, and [Team.Alerts]
// after a Receive, with the tracker's state to store first (Write.Alerts,
// given back to New as Stored.Alerts, so a restart neither alerts again
// nor loses a pending escalation). It refuses to make a message with a
// patient reference in a social team, and a rota, review or team-policy
// op unless this device is an admin's.
//
// # Filed, then deleted
//
// Tick deletes the body of each shown message that a filed op that counts
// names (crdt.State.Filed: an admin's record gateway filed it), once
// Config.FiledGrace (24 h) has passed since that op's time, as retention
// deletes the messages of forgotten epochs (crdt.Log.Redact; the Write
// carries the redacted record). [Team.Unfiled] lists, for an admin's
// device, the clinical messages due for filing (sync/record's Due) older
// than Config.WarnUnfiled (30 days).
//
// Main types: [Team] ([New], [Create], [Join]; [Team.Receive],
// [Team.Send], [Team.Make] and [Team.Publish], [Team.Change],
// [Team.Tick], [Team.Acks], [Team.MembershipFor] and
// [Team.AcceptMembership]),
// [Config], [Effects], [Peer], [Arrival], [Verdict].
//
// Concurrency: a Team is not safe for concurrent use; the node holds one
// lock per team around every call.
package device
