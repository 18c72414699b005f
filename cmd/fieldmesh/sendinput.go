package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/device"
)

// messageInput returns the text of `send`: the argument, or the contents of file ("-": stdin). It
// reads at most one byte over the limit, so an oversized file or stream is refused before the rest
// is read, with the one error every path gives for it (device.CheckMessage, crdt.ErrTextTooLong). One
// trailing newline (as editors and echo leave) is dropped.
func messageInput(args []string, file string, stdin io.Reader) (string, error) {
	switch {
	case file != "" && len(args) > 0:
		return "", errors.New("give the text as an argument or with --file, not both")
	case file == "" && len(args) == 0:
		return "", errors.New("no text: give it as an argument, or with --file FILE (--file - for standard input)")
	case file == "":
		return args[0], device.CheckMessage(crdt.Message{Text: args[0]})
	}
	r := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("cannot read the message: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, crdt.MaxTextLen+2)) // the limit, a newline, one more
	if err != nil {
		return "", fmt.Errorf("cannot read the message: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	text := string(b)
	if len(b) > crdt.MaxTextLen {
		// Cut where the read stopped: the text is too long whatever follows.
		text = string(b[:crdt.MaxTextLen+1])
	}
	return text, device.CheckMessage(crdt.Message{Text: text})
}
