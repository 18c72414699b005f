package sim

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Trace is a contact trace: the contacts between N devices and, from a
// ONE trace, the messages it creates.
type Trace struct {
	N        int
	Contacts []ContactEvent
	Messages []TraceMessage
	// Names maps the trace's host names (the ONE's "n12" or "12") to
	// device indexes.
	Names []string
}

// TraceMessage is a ONE message creation (`<t> C <id> <from> <to> <size>`).
type TraceMessage struct {
	At       time.Duration
	ID       string
	From, To int
	Size     int
}

// Limits of a trace file: a line, and the hosts and events it may name.
const (
	maxTraceLine   = 4096
	maxTraceHosts  = 1 << 20
	maxTraceEvents = 1 << 26
)

// ErrTrace is the error of a malformed trace.
var ErrTrace = errors.New("bad contact trace")

// ReadONE reads a trace in the ONE's StandardEventsReader format: lines
// `<time> CONN <host1> <host2> up|down` and `<time> C <msgid> <from> <to>
// <size> [<responsesize>]`, times in seconds, hosts as the ONE names them
// (an optional letter prefix and a number, so "n12" and "12" are host 12).
// Other event types (DE, DR, DA, DS, R) are skipped; '#' starts a comment.
// Hosts are numbered 0..max seen.
func ReadONE(r io.Reader) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxTraceLine)
	t := &Trace{}
	maxHost := -1
	line := 0
	events := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if events++; events > maxTraceEvents {
			return nil, fmt.Errorf("%w: more than %d events", ErrTrace, maxTraceEvents)
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("%w: line %d: too few fields", ErrTrace, line)
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil || math.IsNaN(sec) || sec < 0 || sec > 1e9 {
			return nil, fmt.Errorf("%w: line %d: bad time %q", ErrTrace, line, f[0])
		}
		at := time.Duration(sec * float64(time.Second))
		switch f[1] {
		case "CONN":
			if len(f) != 5 {
				return nil, fmt.Errorf("%w: line %d: CONN wants two hosts and up or down", ErrTrace, line)
			}
			a, err1 := hostIndex(f[2])
			b, err2 := hostIndex(f[3])
			if err1 != nil || err2 != nil || a == b {
				return nil, fmt.Errorf("%w: line %d: bad hosts %q %q", ErrTrace, line, f[2], f[3])
			}
			var up bool
			switch f[4] {
			case "up":
				up = true
			case "down":
			default:
				return nil, fmt.Errorf("%w: line %d: %q is neither up nor down", ErrTrace, line, f[4])
			}
			maxHost = max(maxHost, a, b)
			t.Contacts = append(t.Contacts, ContactEvent{At: at, A: a, B: b, Up: up})
		case "C":
			if len(f) != 6 && len(f) != 7 {
				return nil, fmt.Errorf("%w: line %d: C wants an id, two hosts and a size", ErrTrace, line)
			}
			a, err1 := hostIndex(f[3])
			b, err2 := hostIndex(f[4])
			size, err3 := strconv.Atoi(f[5])
			if err1 != nil || err2 != nil || err3 != nil || a == b || size < 0 || size > 1<<30 {
				return nil, fmt.Errorf("%w: line %d: bad message", ErrTrace, line)
			}
			maxHost = max(maxHost, a, b)
			t.Messages = append(t.Messages, TraceMessage{At: at, ID: f[2], From: a, To: b, Size: size})
		case "DE", "DR", "DA", "DS", "R", "A":
		default:
			return nil, fmt.Errorf("%w: line %d: unknown event %q", ErrTrace, line, f[1])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTrace, err)
	}
	t.N = maxHost + 1
	slices.SortStableFunc(t.Contacts, func(a, b ContactEvent) int { return cmp.Compare(a.At, b.At) })
	slices.SortStableFunc(t.Messages, func(a, b TraceMessage) int { return cmp.Compare(a.At, b.At) })
	return t, nil
}

func hostIndex(s string) (int, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r >= '0' && r <= '9' })
	if i < 0 {
		return 0, ErrTrace
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil || n < 0 || n >= maxTraceHosts {
		return 0, ErrTrace
	}
	return n, nil
}

// WriteONE writes contacts (and messages) in the ONE's format.
func WriteONE(w io.Writer, t *Trace) error {
	bw := bufio.NewWriter(w)
	i, j := 0, 0
	for i < len(t.Contacts) || j < len(t.Messages) {
		if j >= len(t.Messages) || (i < len(t.Contacts) && t.Contacts[i].At <= t.Messages[j].At) {
			c := t.Contacts[i]
			st := "down"
			if c.Up {
				st = "up"
			}
			fmt.Fprintf(bw, "%s CONN %d %d %s\n", fsec(c.At), c.A, c.B, st)
			i++
		} else {
			m := t.Messages[j]
			fmt.Fprintf(bw, "%s C %s %d %d %d\n", fsec(m.At), m.ID, m.From, m.To, m.Size)
			j++
		}
	}
	return bw.Flush()
}

func fsec(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// Exponential generates contacts among n devices: each pair meets as a
// Poisson process of rate lambda (meetings per second), each meeting
// lasting dur, until horizon.
func Exponential(n int, lambda float64, dur, horizon time.Duration, rng *rand.Rand) []ContactEvent {
	var evs []ContactEvent
	for a := range n {
		for b := a + 1; b < n; b++ {
			t := 0.0
			for {
				t += rng.ExpFloat64() / lambda
				at := time.Duration(t * float64(time.Second))
				if at > horizon {
					break
				}
				evs = append(evs, ContactEvent{At: at, A: a, B: b, Up: true}, ContactEvent{At: at + dur, A: a, B: b})
				t += dur.Seconds()
			}
		}
	}
	slices.SortStableFunc(evs, func(x, y ContactEvent) int { return cmp.Compare(x.At, y.At) })
	return evs
}

func sortContacts(evs []ContactEvent) []ContactEvent {
	slices.SortStableFunc(evs, func(x, y ContactEvent) int { return cmp.Compare(x.At, y.At) })
	return evs
}
