// Package join is how a device becomes a member of a team: the join protocol (Protocol) and its
// formats — invite codes (Invite), the record an inviter keeps of each open invite (Record), and the
// request and answer the two ends exchange.
//
// The package does no network or disk I/O of its own, in the manner of syncthing's protocol package:
// Ask runs the joiner's end and Server.Serve the inviter's end over any io.ReadWriter (a libp2p stream
// in a node, net.Pipe in the tests), and Serve asks an Inviter, a small interface, for what only the
// inviter's device knows: its open invites and its membership rules. The protocol's own rules are
// here: the code's secret is proved before anything else happens, an invite is consumed only after
// that proof and at most once, the inviter's clock decides expiry, and the joiner's device id must be
// the key its connection is authenticated with.
//
// # Protocol
//
// A new member, holding an invite code, opens a stream to the inviter and runs Noise XXpsk3 (flynn/noise;
// Curve25519, ChaCha20-Poly1305, SHA-256; prologue "fieldmesh/join/2") with the invite's 32-byte secret
// as pre-shared key:
//
//	-> e                     payload: invite id (16 bytes, in clear: a random lookup key)
//	<- e, ee, s, es
//	-> s, se, psk            payload: request (device id, display name, prekey)
//	<- transport messages    payload: answer (team id, genesis, membership history whose commit adds
//	                         the joiner and seals the new epoch key to its prekey) or a refusal
//
// The inviter learns which secret to use from the invite id in the first message; only a holder of
// the code completes the handshake. The joiner's Noise static key becomes its member key; the prekey
// (a one-time X25519 key whose private half the joiner holds, device.Config.JoinPrekey) is what the
// commit that adds it seals its box to, so that a capture of the joiner after that epoch's retention
// cannot reopen it (docs/security.md). Handshake messages are length-prefixed frames (sync/framing) of at most 4,096 bytes; the
// answer, at most 16 MiB and 100,000 history items, travels as Noise transport messages of at most
// 60,000 plaintext bytes, each "more" byte | chunk.
//
// A refusal after the handshake is an answer with a reason. Before it (an unknown, used or expired
// invite, a wrong secret, a malformed message) the inviter closes the stream without a word, and Ask
// reports the invite code as unknown, used or expired: a prober learns nothing.
//
// # Formats
//
// Invite codes are humancode's Invite kind ("fmi2-…"). Records, requests and answers have a version
// byte each; every decoder refuses other versions, non-canonical input and trailing bytes, and never
// panics (fuzzed, with committed corpora in testdata/fuzz).
//
// # Concurrency
//
// Ask and Serve run one exchange on the calling goroutine and keep nothing between calls. A Server is
// safe for concurrent use if its Inviter is; exchanges for one invite may run at once, and the
// Inviter's Use decides which one gets it.
package join
