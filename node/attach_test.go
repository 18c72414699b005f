package node

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/framing"
)

// testJPEG returns a w × h JPEG whose header carries an APP1 segment with marker in it.
func testJPEG(t testing.TB, w, h int, marker string) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x ^ y), uint8(x * 3), uint8(y * 5), 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	seg := append([]byte("Exif\x00\x00"), marker...)
	app1 := append([]byte{0xff, 0xe1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}, seg...)
	return append(append(append([]byte{}, b.Bytes()[:2]...), app1...), b.Bytes()[2:]...)
}

// waitAttachments waits, on the node's watch events with a deadline, until every attachment of the
// team's messages is stored, and returns them.
func waitAttachments(t *testing.T, n *testNode, team string, want int) []AttachmentInfo {
	t.Helper()
	ch, cancel, err := n.Watch(team)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		as, err := n.Attachments(team)
		if err != nil {
			t.Fatal(err)
		}
		done := len(as) == want
		for _, a := range as {
			done = done && a.Stored == a.Chunks
		}
		if done {
			return as
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: attachments %+v after the deadline; want %d complete", n.id.Name, as, want)
		}
	}
}

func TestAttachmentReachesMember(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	_, ref := clinicalTeam(t, a, "Wound clinic", b)
	const marker = "GPS-51N-PATIENT-CAMERA-MARKER"
	photo := testJPEG(t, 2000, 1500, marker)
	doc := bytes.Repeat([]byte("%PDF lab form "), 10000)
	id, _, err := a.SendAttached(ref, crdt.Message{Text: "day 3", Priority: crdt.Routine},
		[]Attachment{{Type: "image/jpeg", Data: photo}, {Type: "application/pdf", Data: doc}})
	if err != nil {
		t.Fatal(err)
	}
	as := waitAttachments(t, b, ref, 2)
	if as[0].Message != id || as[0].Type != "image/jpeg" || as[1].Type != "application/pdf" || as[1].Size != len(doc) {
		t.Fatalf("b's attachments %+v", as)
	}
	for i := range 2 {
		_, sent, err := a.OpenAttachment(id.String(), i)
		if err != nil {
			t.Fatal(err)
		}
		typ, got, err := b.OpenAttachment(id.String()[:8], i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, sent) || typ != as[i].Type {
			t.Errorf("attachment %d: b opened %d bytes of %s, not the %d a sent", i, len(got), typ, len(sent))
		}
	}
	_, img, _ := b.OpenAttachment(id.String(), 0)
	if bytes.Contains(img, []byte(marker)) || bytes.Contains(img, []byte("Exif")) {
		t.Error("the photo kept its EXIF segment")
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width != 1600 || cfg.Height != 1200 {
		t.Errorf("received photo %d × %d (%v); want 1600 × 1200", cfg.Width, cfg.Height, err)
	}
	// The chunks are in the store, sealed: no 64-byte run of the photo or the document is in any of
	// them (the store itself is encrypted at rest as well).
	for _, n := range []*testNode{a, b} {
		for _, m := range n.snapshot(ref).Messages {
			for k, at := range m.Attachments {
				plain := img
				if k == 1 {
					plain = doc
				}
				for _, c := range at.Chunks {
					sealed, err := n.st.Chunk(c)
					if err != nil {
						t.Fatal(err)
					}
					if bytes.Contains(sealed, plain[1000:1064]) {
						t.Errorf("%s stores a chunk with plaintext in it", n.id.Name)
					}
				}
			}
		}
	}
}

func TestAttachmentLimits(t *testing.T) {
	_, ns := newMockNodes(t, "Dr Banda")
	a := ns[0]
	team, err := a.CreateTeam("Ward", crdt.Clinical)
	if err != nil {
		t.Fatal(err)
	}
	ref := team.ID.String()
	big := make([]byte, crdt.MaxAttachmentSize+1)
	five := make([]Attachment, crdt.MaxAttachments+1)
	for i := range five {
		five[i] = Attachment{Type: "application/pdf", Data: []byte("x")}
	}
	three := []Attachment{{Type: "a/b", Data: make([]byte, crdt.MaxAttachmentSize)}, {Type: "a/b", Data: make([]byte, crdt.MaxAttachmentSize)}, {Type: "a/b", Data: []byte{1}}}
	for name, files := range map[string][]Attachment{
		"oversized":        {{Type: "application/pdf", Data: big}},
		"too many":         five,
		"over the message": three,
		"not an image":     {{Type: "image/jpeg", Data: []byte("not a jpeg")}},
	} {
		if _, _, err := a.SendAttached(ref, crdt.Message{Text: "x"}, files); err == nil {
			t.Errorf("%s: sent", name)
		}
	}
	if n, _, _ := a.st.ChunkBytes(); n != 0 {
		t.Errorf("refused sends stored %d chunks", n)
	}
	if ms, _ := a.Messages(ref); len(ms) != 0 {
		t.Errorf("refused sends made %d messages", len(ms))
	}
}

// TestHostileChunkPeer: a member that answers a chunk request with a chunk that is not the one
// asked for, or with a frame larger than the chunk, is banned; the chunk it sent before, a good one,
// stays stored and intact, and nothing of the bad one is stored.
func TestHostileChunkPeer(t *testing.T) {
	for _, tt := range []struct {
		name string
		bad  func(s network.Stream, good [][]byte) error
	}{
		{"wrong chunk", func(s network.Stream, good [][]byte) error { return framing.Write(s, attach.MarshalResponse(good[2])) }},
		{"flipped byte", func(s network.Stream, good [][]byte) error {
			c := bytes.Clone(good[1])
			c[10] ^= 1
			return framing.Write(s, attach.MarshalResponse(c))
		}},
		{"oversized", func(s network.Stream, good [][]byte) error {
			return framing.Write(s, attach.MarshalResponse(make([]byte, 1<<20)))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, ns := newMockNodes(t, "Sender", "Receiver", "Hostile")
			a, b, h := ns[0], ns[1], ns[2]
			team, err := a.CreateTeam("Ward", crdt.Clinical)
			if err != nil {
				t.Fatal(err)
			}
			ref := team.ID.String()
			joinAll(t, a, ref, b, h)
			// The sender serves nothing: the receiver can get chunks only from the hostile member.
			a.host.RemoveStreamHandler(ChunkProtocol)
			doc := bytes.Repeat([]byte("scan "), 20000) // 4 chunks
			id, _, err := a.SendAttached(ref, crdt.Message{Text: "form"}, []Attachment{{Type: "application/pdf", Data: doc}})
			if err != nil {
				t.Fatal(err)
			}
			waitMessages(t, b, ref, 1)
			man := a.snapshot(ref).Messages[0].Attachments[0]
			good := make([][]byte, len(man.Chunks))
			for i, c := range man.Chunks {
				if good[i], err = a.st.Chunk(c); err != nil {
					t.Fatal(err)
				}
			}
			h.host.SetStreamHandler(ChunkProtocol, func(s network.Stream) {
				defer s.Close()
				if _, err := framing.Read(s, attach.MaxRequestFrame); err != nil {
					s.Reset()
					return
				}
				_ = framing.Write(s, attach.MarshalResponse(good[0]))
				_ = tt.bad(s, good)
			})
			tb, _ := b.teamByRef(ref)
			// The receiver may have started fetching from the hostile member on its own (its gossip
			// or a sync with it); whichever fetch meets the bad frame first bans it.
			if err := b.fetchFrom(context.Background(), h.host.ID(), tb); err != nil {
				t.Logf("fetch: %v", err)
			}
			if !b.isBanned(h.host.ID()) {
				t.Fatal("the hostile member is not banned")
			}
			got, err := b.st.Chunk(man.Chunks[0])
			if err != nil || !bytes.Equal(got, good[0]) {
				t.Fatalf("the good chunk is not stored intact: %v", err)
			}
			if n, _, _ := b.st.ChunkBytes(); n != 1 {
				t.Errorf("%d chunks stored; want only the good one", n)
			}
			if _, _, err := b.OpenAttachment(id.String(), 0); !errors.Is(err, ErrAttachmentMissing) {
				t.Errorf("open: %v; want ErrAttachmentMissing", err)
			}
		})
	}
}

// TestAttachmentsFollowRetention: when the epoch a message was sent in passes retention, its body
// is deleted and its attachment chunks with it, on the sender and on the receiver.
func TestAttachmentsFollowRetention(t *testing.T) {
	_, ns := newMockNodesCfg(t, func(_ int, c *Config) {
		c.RotateEvery = 400 * time.Millisecond
		c.RetainKeys = time.Millisecond
		c.EpochCheck = 40 * time.Millisecond
	}, "Dr Banda", "Nurse Phiri")
	a, b := ns[0], ns[1]
	_, ref := clinicalTeam(t, a, "Ward", b)
	id, _, err := a.SendAttached(ref, crdt.Message{Text: "lab form"}, []Attachment{{Type: "application/pdf", Data: bytes.Repeat([]byte("form "), 20000)}})
	if err != nil {
		t.Fatal(err)
	}
	waitAttachments(t, b, ref, 1)
	for _, n := range []*testNode{a, b} {
		waitState(t, n, ref, func(s *crdt.State) bool {
			for _, m := range s.Messages {
				if m.ID == id {
					return false
				}
			}
			return true
		})
		if c, size, err := n.st.ChunkBytes(); err != nil || c != 0 {
			t.Errorf("%s holds %d chunks (%d bytes, %v) after the message's retention; want none", n.id.Name, c, size, err)
		}
	}
}
