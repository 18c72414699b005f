// Package catchup is fieldmesh's foundation catch-up protocol: two nodes that share a topic
// exchange the envelopes one has and the other lacks, by sending every id. It is the
// correctness-first baseline, replaced later by range-based set reconciliation
// (/fieldmesh/sync/2.0.0, as in Negentropy) behind the same Session interface; BenchmarkCatchup
// measures the bytes that replacement must beat (about 32 bytes per envelope held, whatever is
// missing).
//
// # Model
//
// A Session is sans-I/O: it owns no goroutine, socket, timer or disk. The caller creates one per
// (stream, topic) with NewInitiator (the side that opened the stream) or NewResponder, over a
// Source (a read-only view of the topic's envelopes: ids and marshalled envelope bytes),
// sends the frame Start returns, then feeds each frame from the peer to Handle and sends the
// frames it returns, in order, until Handle reports done. Envelopes arrive as raw bytes that
// the session has not validated: the caller validates and stores them. Envelopes are opaque
// here, ids are [32]byte and times uint64, so the package imports nothing of fieldmesh.
// WriteFrame and ReadFrame carry frames over a byte stream (a libp2p stream in the node) with a
// uvarint length prefix. A Session is not safe for concurrent use.
//
// # Protocol
//
//	initiator                                     responder
//	HAVE(ids, more) ------------------------------>
//	               <------------------------------ NEXT            (once per HAVE with more)
//	HAVE(ids, last) ------------------------------>
//	               <------------------------------ GIVE(envelopes the initiator lacks, ..., last)
//	               <------------------------------ WANT(ids the responder lacks, ..., last)
//	GIVE(wanted envelopes, ..., last) ------------>                (only if WANT listed any)
//
// The initiator announces every id it has. The responder paces the HAVE frames with NEXT
// (Start returns a single frame, so a long HAVE list is sent one frame per round trip: one extra
// round trip per 32767 ids at the default frame size). After the last HAVE frame the responder
// gives every envelope the initiator did not announce and asks for every announced id it
// lacks; the initiator gives those, and both are done. Nothing is sent that the peer announced,
// nothing is asked for that this side has, and nothing arrives twice. The exchange is strictly
// half-duplex (one side writes while the other reads), so a sequential read-Handle-write loop
// per end cannot deadlock on a flow-controlled stream.
//
// The item times of the Source are not sent: every list (HAVE, WANT, the ids in GIVE) is in
// strictly ascending id order, which lets each end check for duplicates, unsolicited and
// out-of-order items with a merge against sorted lists instead of per-peer sets.
//
// # Frames
//
// Every frame is a version byte (1), a type byte and a payload; integers are minimal uvarints:
//
//	HAVE (1)  flags  count  count × id[32]
//	NEXT (2)  (no payload)
//	GIVE (3)  flags  count  count × (id[32]  length  envelope[length])
//	WANT (4)  flags  count  count × id[32]
//
// flags bit 0 is "more": another frame of the same type follows; the other bits must be zero.
// A frame with "more" set carries at least one item. Decoders check every count against the
// bytes that follow before allocating, refuse trailing bytes, and never panic.
//
// # Limits
//
//   - Frames sent are at most maxFrame bytes: 1 MiB by default (maxFrame 0), clamped to
//     [4 KiB, 4 MiB]. Frames received may be up to MaxFrameSize (4 MiB) whatever the local
//     maxFrame, so differently configured ends interoperate: read with
//     ReadFrame(r, MaxFrameSize).
//   - An envelope is sent in one frame and may be at most maxFrame-EnvelopeOverhead (48)
//     bytes; a longer one fails the sending side with ErrEnvelopeTooLarge. Envelopes are at most
//     80 KiB, which fits the default frame size but not the 4 KiB minimum.
//   - MaxItems (2^20) caps the ids a responder accepts in HAVE and the envelopes an initiator
//     accepts in GIVE, and the ids an initiator announces. Every accepted frame carries at least
//     one item or ends a phase, so every exchange ends after a bounded number of frames, and the
//     work per frame is linear in its size: a peer cannot make a session loop or grow without
//     bound.
//   - Memory: each end holds its own ids (32 bytes each); the responder holds the ids it wants.
//     Handle returns a whole flight of frames at once, so the GIVE flight holds every envelope
//     the peer lacks in memory; this is the baseline's price, removed by the ranged protocol.
//
// # Errors
//
// Any error from Handle ends the session (the caller drops the stream): frames that do not
// decode (ErrVersion, ErrMalformed, ErrFrameTooLarge), frames of the wrong type for the state
// (ErrUnexpectedFrame), unsolicited items (ErrUnsolicited), too many items (ErrTooManyItems),
// envelopes too large to send (ErrEnvelopeTooLarge) and Source errors (wrapped). Errors are in
// errors.go.
package catchup
