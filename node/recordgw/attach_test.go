package recordgw

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
	"time"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/record"
	"github.com/fieldmesh/fieldmesh/sync/record/fhirtest"
)

// testJPEG is a w × h photo.
func testJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x ^ y), uint8(x * 3), uint8(y * 5), 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// waitFor waits, on the node's watch events with a deadline, until cond holds.
func waitFor(t *testing.T, g *gwNode, what string, cond func() bool) {
	t.Helper()
	ch, cancel, err := g.Watch(g.team)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond): // chunk evictions and deletions raise no event
		case <-deadline:
			t.Fatalf("%s: not after 30 s", what)
		}
	}
}

// attachmentOf returns the node's view of attachment 0 of message id.
func attachmentOf(t *testing.T, g *gwNode, id crdt.OpID) (node.AttachmentInfo, bool) {
	t.Helper()
	as, err := g.Attachments(g.team)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.Message == id && a.Index == 0 {
			return a, true
		}
	}
	return node.AttachmentInfo{}, false
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

// TestPhotoFiledThenDeleted, against the real test FHIR server, with two real nodes on loopback:
// a nurse's device A sends a patient's message with a photo to the clinic box G, the gateway.
//
//  1. G read the message and its storage budget evicted the photo's chunks, so G holds the text but
//     not the photo: the gateway does not file it (the server holds no Communication, the message
//     shows no filed mark) and reports it as waiting for attachments; it asks A for the chunks.
//  2. Once they are back, the next pass files it: the server returns the Attachment with data whose
//     SHA-256 is that of the photo A sent (and the R4 SHA-1 hash of it).
//  3. After the filed op and the 1 ms grace, the photo's chunks are gone from A's store and G's,
//     while the chunks of a message that was not filed stay (the check can fail).
func TestPhotoFiledThenDeleted(t *testing.T) {
	srv := fhirtest.Shared(t)
	srv.CreatePatient(t, "urn:clinic", "TOKEN-ph0t0")
	fast := func(c *node.Config) {
		c.FiledGrace = time.Millisecond
		c.EpochCheck = 20 * time.Millisecond
		c.CollectEvery = 20 * time.Millisecond
	}
	g := newClinic(t, func(c *node.Config) {
		fast(c)
		c.AttachmentBudget = 1 // every read message's chunks are evicted
	})
	a := startNamed(t, t.TempDir(), true, "Nurse Phiri", fast)
	inv, err := g.Invite(g.team, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Join(context.Background(), inv.Code()); err != nil {
		t.Fatal(err)
	}
	a.team = g.team

	id, _, err := a.SendAttached(a.team, crdt.Message{Text: "wound day 3", Patient: "urn:clinic|TOKEN-ph0t0"},
		[]node.Attachment{{Type: "image/jpeg", Data: testJPEG(t, 640, 480)}})
	if err != nil {
		t.Fatal(err)
	}
	_, sent, err := a.OpenAttachment(id.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var manifest crdt.Attachment
	waitFor(t, g, "G holds the photo", func() bool {
		info, ok := attachmentOf(t, g, id)
		return ok && info.Stored == info.Chunks
	})
	ms, err := g.Messages(g.team)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == id {
			manifest = m.Attachments[0]
		}
	}
	// G reads it; a second, unfiled message with a document makes G store chunks again, and its
	// budget evicts the read photo's.
	if err := g.MarkRead(g.team, []crdt.OpID{id}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.FlushAcks(); err != nil {
		t.Fatal(err)
	}
	doc := bytes.Repeat([]byte("KEPT lab form "), 3000)
	kept, _, err := a.SendAttached(a.team, crdt.Message{Text: "not for the record"}, []node.Attachment{{Type: "application/pdf", Data: doc}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, g, "G evicts the read photo", func() bool {
		info, ok := attachmentOf(t, g, id)
		k, ok2 := attachmentOf(t, g, kept)
		return ok && ok2 && info.Evicted && info.Stored == 0 && k.Stored == k.Chunks
	})

	// 1. Not all of it at the gateway: not filed, waiting.
	clk := &clock{now: time.Now()}
	gw := gateway(t, g, nil, Config{FHIR: srv.URL, Now: clk.Now})
	rep := pass(t, gw)
	if rep.Filed != 0 || len(rep.Waiting) != 1 || rep.Waiting[0].ID != id || rep.Waiting[0].Code != record.WaitingAttachments {
		t.Fatalf("pass with the photo missing: %+v", rep)
	}
	if n := len(communications(t, srv, id)); n != 0 || g.filedRef(t, id) != "" {
		t.Fatalf("filed without its photo: %d Communications, filed ref %q", n, g.filedRef(t, id))
	}

	// 2. The gateway asked A for the chunks; once back, the next pass files the message.
	waitFor(t, g, "G fetches the photo again", func() bool {
		info, ok := attachmentOf(t, g, id)
		return ok && info.Stored == info.Chunks
	})
	clk.add(rep.Next.Sub(clk.Now()))
	if rep := pass(t, gw); rep.Filed != 1 || rep.Queued != 0 {
		t.Fatalf("pass with the photo back: %+v", rep)
	}
	cs := communications(t, srv, id)
	if len(cs) != 1 {
		t.Fatalf("the server holds %d Communications of the message", len(cs))
	}
	raw, _ := json.Marshal(cs[0]["payload"])
	var payload []struct {
		ContentString     string `json:"contentString"`
		ContentAttachment *struct {
			ContentType, Data, Hash string
			Size                    int
		} `json:"contentAttachment"`
	}
	if err := json.Unmarshal(raw, &payload); err != nil || len(payload) != 2 || payload[1].ContentAttachment == nil {
		t.Fatalf("payload %s (%v); want the text and one attachment", raw, err)
	}
	at := payload[1].ContentAttachment
	data, err := base64.StdEncoding.DecodeString(at.Data)
	if err != nil {
		t.Fatal(err)
	}
	sha1Sent := sha1.Sum(sent)
	if sha(data) != sha(sent) || sha(data) != manifest.Hash || at.Size != len(sent) || at.ContentType != "image/jpeg" ||
		at.Hash != base64.StdEncoding.EncodeToString(sha1Sent[:]) {
		t.Fatalf("the server's attachment (%s, %d bytes, hash %s) is not the photo A sent (%d bytes)", at.ContentType, len(data), at.Hash, len(sent))
	}

	// 3. Filed: after the grace, the photo's chunks leave both stores; the other message's stay.
	for _, n := range []*gwNode{a, g} {
		waitFor(t, n, "the filed message leaves "+n.dir, func() bool {
			ms, err := n.Messages(n.team)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				if m.ID == id {
					return false
				}
			}
			return true
		})
		for i, c := range manifest.Chunks {
			if ok, err := n.st.HasChunk(c); err != nil || ok {
				t.Errorf("%s still holds chunk %d of the filed photo (%v)", n.dir, i, err)
			}
		}
		if k, ok := attachmentOf(t, n, kept); !ok || k.Stored != k.Chunks || k.Stored == 0 {
			t.Errorf("%s lost the chunks of the message that was not filed: %+v", n.dir, k)
		}
	}
}

// TestObservationProfileFilesMedia: the observation profile files a photo as a Media and a PDF as a
// DocumentReference with the Observation, and the real server holds both with the bytes sent.
func TestObservationProfileFilesMedia(t *testing.T) {
	srv := fhirtest.Shared(t)
	srv.CreatePatient(t, "urn:clinic", "TOKEN-med1a")
	g := newClinic(t, nil)
	doc := bytes.Repeat([]byte("%PDF partograph "), 500)
	id, _, err := g.SendAttached(g.team, crdt.Message{Text: "partograph and photo", Patient: "urn:clinic|TOKEN-med1a"},
		[]node.Attachment{{Type: "image/jpeg", Data: testJPEG(t, 320, 240)}, {Type: "application/pdf", Data: doc}})
	if err != nil {
		t.Fatal(err)
	}
	_, photo, err := g.OpenAttachment(id.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := record.ProfileByName("observation")
	if rep := pass(t, gateway(t, g, nil, Config{FHIR: srv.URL, Profile: p})); rep.Filed != 1 {
		t.Fatalf("pass: %+v", rep)
	}
	for i, want := range []struct {
		typ  string
		data []byte
	}{{"Media", photo}, {"DocumentReference", doc}} {
		q := want.typ + "?identifier=" + record.AttachmentSystem + "|" + id.String() + "/" + string(rune('1'+i))
		rs := srv.Search(t, q)
		if len(rs) != 1 {
			t.Fatalf("%s: %d resources", q, len(rs))
		}
		var r struct {
			Content json.RawMessage `json:"content"`
			Subject struct{ Reference string }
		}
		if err := json.Unmarshal(rs[0], &r); err != nil {
			t.Fatal(err)
		}
		var a struct{ Data string }
		if want.typ == "Media" {
			_ = json.Unmarshal(r.Content, &a)
		} else {
			var cs []struct{ Attachment struct{ Data string } }
			_ = json.Unmarshal(r.Content, &cs)
			if len(cs) == 1 {
				a.Data = cs[0].Attachment.Data
			}
		}
		data, err := base64.StdEncoding.DecodeString(a.Data)
		if err != nil || sha(data) != sha(want.data) || r.Subject.Reference == "" {
			t.Errorf("%s: %d bytes (%v), subject %q; want the %d bytes sent, about the patient", want.typ, len(data), err, r.Subject.Reference, len(want.data))
		}
	}
}

// TestBundleOverLimitHeld: a message whose Bundle (its photo) is over the gateway's MaxBundle is not
// posted: it is held as too large and the server holds nothing of it.
func TestBundleOverLimitHeld(t *testing.T) {
	srv := fhirtest.Shared(t)
	srv.CreatePatient(t, "urn:clinic", "TOKEN-b1g")
	g := newClinic(t, nil)
	id, _, err := g.SendAttached(g.team, crdt.Message{Text: "big photo", Patient: "urn:clinic|TOKEN-b1g"},
		[]node.Attachment{{Type: "image/jpeg", Data: testJPEG(t, 640, 480)}})
	if err != nil {
		t.Fatal(err)
	}
	rep := pass(t, gateway(t, g, nil, Config{FHIR: srv.URL, MaxBundle: 4 << 10}))
	if rep.Filed != 0 || len(rep.Waiting) != 1 || rep.Waiting[0].Code != record.TooLarge || rep.Waiting[0].Code.Retried() {
		t.Fatalf("pass: %+v", rep)
	}
	if n := len(communications(t, srv, id)); n != 0 || g.filedRef(t, id) != "" {
		t.Fatalf("a Bundle over the limit was filed: %d Communications", n)
	}
}
