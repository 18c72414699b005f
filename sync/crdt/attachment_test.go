package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func testAttachment(size int, seed byte) Attachment {
	a := Attachment{Type: "image/jpeg", Size: size, Key: NewChunkKey([32]byte{seed, 1})}
	a.Hash[0] = seed
	a.Chunks = make([][32]byte, ChunkCount(size))
	for i := range a.Chunks {
		a.Chunks[i][0], a.Chunks[i][1] = seed, byte(i)
	}
	return a
}

func TestMessageAttachmentsRoundtrip(t *testing.T) {
	id := OpID{7}
	msgs := []Message{
		{Text: "wound day 3", Attachments: []Attachment{testAttachment(1, 1)}},
		{Text: "", Priority: Urgent, ReplyTo: &id, Attachments: []Attachment{testAttachment(ChunkSize, 2), testAttachment(ChunkSize+1, 3)}},
		{Text: strings.Repeat("a", MaxTextLen), Patient: strings.Repeat("p", MaxPatientLen), Attachments: []Attachment{
			testAttachment(MaxAttachmentSize, 4), testAttachment(MaxAttachmentSize, 5)}},
	}
	for i, m := range msgs {
		if err := m.Validate(); err != nil {
			t.Fatalf("message %d: Validate: %v", i, err)
		}
		enc := m.Marshal()
		if len(enc) > MaxOpSize {
			t.Fatalf("message %d: %d bytes, more than an op holds (%d)", i, len(enc), MaxOpSize)
		}
		got, err := UnmarshalMessage(enc)
		if err != nil {
			t.Fatalf("message %d: unmarshal: %v", i, err)
		}
		if len(got.Attachments) != len(m.Attachments) {
			t.Fatalf("message %d: got %d attachments; want %d", i, len(got.Attachments), len(m.Attachments))
		}
		for j := range m.Attachments {
			g, w := got.Attachments[j], m.Attachments[j]
			if g.Type != w.Type || g.Size != w.Size || g.Hash != w.Hash || !g.Key.Equal(w.Key) || !reflect.DeepEqual(g.Chunks, w.Chunks) {
				t.Errorf("message %d attachment %d: got %+v; want %+v", i, j, g, w)
			}
		}
		if !bytes.Equal(got.Marshal(), enc) {
			t.Errorf("message %d: re-encoding differs", i)
		}
		// The text is the rest of the body (the op frames the body): a prefix that cuts the
		// attachments is refused; one that cuts the text is that message with a shorter text.
		textAt := len(enc) - len(m.Text)
		for k := textAt - 40; k < len(enc); k++ {
			got, err := UnmarshalMessage(enc[:k])
			switch {
			case k < textAt && err == nil:
				t.Errorf("message %d: %d-byte prefix (into the attachments) decoded", i, k)
			case k >= textAt && utf8.Valid(enc[textAt:k]) && (err != nil || got.Text != m.Text[:k-textAt] || len(got.Attachments) != len(m.Attachments)):
				t.Errorf("message %d: %d-byte prefix (into the text): %v, text %q", i, k, err, got.Text)
			}
		}
	}
	// A message without attachments: the head byte (priority 1), then the text.
	plain := Message{Text: "x", Priority: Urgent}
	if got, want := plain.Marshal(), []byte{1, 'x'}; !bytes.Equal(got, want) {
		t.Errorf("plain message: got %x; want %x", got, want)
	}
}

func TestMessageAttachmentLimits(t *testing.T) {
	over := testAttachment(MaxAttachmentSize, 1)
	over.Size++
	over.Chunks = append(over.Chunks, [32]byte{})
	fewChunks := testAttachment(3*ChunkSize, 1)
	fewChunks.Chunks = fewChunks.Chunks[:2]
	noType := testAttachment(10, 1)
	noType.Type = ""
	spaceType := testAttachment(10, 1)
	spaceType.Type = "image/jpeg; x"
	five := make([]Attachment, MaxAttachments+1)
	for i := range five {
		five[i] = testAttachment(10, byte(i))
	}
	three := []Attachment{testAttachment(MaxAttachmentSize, 1), testAttachment(MaxAttachmentSize, 2), testAttachment(1, 3)}
	tests := []struct {
		name string
		as   []Attachment
	}{
		{"oversized attachment", []Attachment{over}},
		{"chunk count not the size's", []Attachment{fewChunks}},
		{"empty media type", []Attachment{noType}},
		{"media type with a space", []Attachment{spaceType}},
		{"too many attachments", five},
		{"over the per-message total", three},
		{"empty attachment", []Attachment{{Type: "a/b"}}},
	}
	for _, tt := range tests {
		m := Message{Text: "x", Attachments: tt.as}
		if err := m.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate got %v; want ErrInvalid", tt.name, err)
		}
		if _, err := UnmarshalMessage(m.Marshal()); err == nil {
			t.Errorf("%s: decoded", tt.name)
		}
	}
	// A count of 0 is not the canonical encoding of "no attachments".
	if _, err := UnmarshalMessage([]byte{msgAttached, 0, 'x'}); !errors.Is(err, ErrMalformed) {
		t.Errorf("zero count: got %v; want ErrMalformed", err)
	}
	// A size claiming 2^40 bytes is refused before any chunk hash is read.
	b := []byte{msgAttached, 1, 1, 'a', 0x80, 0x80, 0x80, 0x80, 0x80, 0x20}
	b = append(b, make([]byte, 200)...)
	if _, err := UnmarshalMessage(b); !errors.Is(err, ErrInvalid) {
		t.Errorf("huge size: got %v; want ErrInvalid", err)
	}
}

func TestChunkKeyRedacted(t *testing.T) {
	k := NewChunkKey([32]byte{0xab, 0xcd, 0xef})
	a := Attachment{Type: "image/jpeg", Size: 1, Key: k, Chunks: make([][32]byte, 1)}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "key", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v", a, a, a), logged.String()} {
		if strings.Contains(s, "abcdef") || strings.Contains(s, "171 205") || !strings.Contains(s, "[redacted]") {
			t.Errorf("key printed: %s", s)
		}
	}
}

func TestChunkLen(t *testing.T) {
	tests := []struct{ size, i, want int }{
		{1, 0, 1}, {ChunkSize, 0, ChunkSize}, {ChunkSize, 1, 0}, {ChunkSize + 5, 1, 5}, {10, -1, 0}, {0, 0, 0},
	}
	for _, tt := range tests {
		if got := ChunkLen(tt.size, tt.i); got != tt.want {
			t.Errorf("ChunkLen(%d, %d) = %d; want %d", tt.size, tt.i, got, tt.want)
		}
	}
}

func FuzzMessageAttachments(f *testing.F) {
	f.Add(Message{Text: "x", Attachments: []Attachment{testAttachment(1, 1)}}.Marshal())
	f.Add(Message{Attachments: []Attachment{testAttachment(ChunkSize+1, 1), testAttachment(3, 2)}}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnmarshalMessage(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid Message: %v", err)
		}
		if m.AttachmentBytes() > MaxMessageAttachmentBytes {
			t.Fatalf("decoded %d attachment bytes", m.AttachmentBytes())
		}
		if got := m.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("decode-encode not identity:\n in %x\nout %x", b, got)
		}
	})
}
