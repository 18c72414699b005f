package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// endless is a reader that never ends; it counts what was read from it.
type endless struct{ read int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.read += len(p)
	return len(p), nil
}

func TestMessageInput(t *testing.T) {
	limit := strings.Repeat("a", crdt.MaxTextLen)
	for _, tc := range []struct {
		what  string
		args  []string
		file  string
		stdin io.Reader
		want  string
		err   error
	}{
		{"argument", []string{"hello"}, "", nil, "hello", nil},
		{"stdin, newline dropped", nil, "-", strings.NewReader("hello\n"), "hello", nil},
		{"stdin, only one newline dropped", nil, "-", strings.NewReader("hello\n\n"), "hello\n", nil},
		{"stdin at the limit with a newline", nil, "-", strings.NewReader(limit + "\n"), limit, nil},
		{"argument over the limit", []string{limit + "a"}, "", nil, "", crdt.ErrTextTooLong},
		{"stdin over the limit", nil, "-", strings.NewReader(limit + "a"), "", crdt.ErrTextTooLong},
		{"stdin over the limit after a newline", nil, "-", strings.NewReader(limit + "\na"), "", crdt.ErrTextTooLong},
		{"empty stdin", nil, "-", strings.NewReader(""), "", nil},
	} {
		got, err := messageInput(tc.args, tc.file, tc.stdin)
		switch {
		case tc.err != nil:
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: err %v; want %v", tc.what, err, tc.err)
			}
		case tc.what == "empty stdin":
			if err == nil {
				t.Errorf("%s: accepted", tc.what)
			}
		case err != nil || got != tc.want:
			t.Errorf("%s: %q, %v; want %q", tc.what, got, err, tc.want)
		}
	}
	if _, err := messageInput([]string{"x"}, "f", nil); err == nil {
		t.Error("both an argument and --file: accepted")
	}
	e := &endless{}
	if _, err := messageInput(nil, "-", e); !errors.Is(err, crdt.ErrTextTooLong) || e.read > 2*crdt.MaxTextLen {
		t.Errorf("endless stdin: %v after reading %d bytes; want a refusal within the limit", err, e.read)
	}
}
