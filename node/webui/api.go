package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"rsc.io/qr"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// Page sizes of GET /api/messages.
const (
	DefaultPage = 100
	MaxPage     = 500
)

// Message is a message as the page shows it: the local API's form, with the names of the members
// whose devices acknowledged it.
type Message struct {
	localapi.Message
	ReceivedBy []string `json:"received_by"`
	ReadBy     []string `json:"read_by"`
}

// Page is the answer of GET /api/messages.
type Page struct {
	Messages []Message `json:"messages"`
	// More says there are older messages than the first of Messages.
	More bool `json:"more"`
}

func nodeErr(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, node.ErrUnknownTeam) {
		code = http.StatusNotFound
	}
	writeErr(w, code, strings.TrimPrefix(err.Error(), "node: "))
}

// messages answers a page of a team's messages: the newest limit before the message "before" (or the
// newest of all), in display order. The whole list is the node's (Messages); only the page is sent.
func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	team := q.Get("team")
	limit := DefaultPage
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			writeErr(w, http.StatusBadRequest, "bad page size: give a positive number")
			return
		}
		limit = min(n, MaxPage)
	}
	n, _, ok := s.current(w, r)
	if !ok {
		return
	}
	all, err := n.Messages(team)
	if err != nil {
		nodeErr(w, err)
		return
	}
	end := len(all)
	if b := q.Get("before"); b != "" {
		end = -1
		for i, m := range all {
			if m.ID.String() == b {
				end = i
				break
			}
		}
		if end < 0 {
			writeErr(w, http.StatusNotFound, "that message is no longer in the team: reload the conversation")
			return
		}
	}
	start := max(0, end-limit)
	page := all[start:end]
	names := map[string]string{}
	if ms, err := n.Members(team); err == nil {
		for _, m := range ms {
			for _, d := range m.Devices {
				names[d.ID.String()] = m.Name
			}
		}
	}
	nameList := func(ids []string) []string {
		out := []string{}
		seen := map[string]bool{}
		for _, id := range ids {
			n, ok := names[id]
			if !ok {
				n = "a former member"
			}
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
		return out
	}
	out := Page{Messages: make([]Message, 0, len(page)), More: start > 0}
	ids := make([]crdt.OpID, 0, len(page))
	for _, m := range page {
		var rec, read []string
		for _, d := range m.ReceivedBy {
			rec = append(rec, d.String())
		}
		for _, d := range m.ReadBy {
			read = append(read, d.String())
		}
		out.Messages = append(out.Messages, Message{Message: localapi.MessageJSON(m), ReceivedBy: nameList(rec), ReadBy: nameList(read)})
		ids = append(ids, m.ID)
	}
	// What reached the reader counts as read, as with the command line's messages.
	if err := n.MarkRead(team, ids); err != nil {
		s.log.Debug("web UI: mark read", "err", err)
	}
	writeJSON(w, http.StatusOK, out)
}

// events streams server-sent events: "team" with {"team": ID} each time a team's log grows (coalesced
// by the node's Watch), and "status" every statusEvery, when it also starts watching teams joined
// since. Events carry ids only; the page fetches what changed.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	n, locked, ok := s.current(w, r)
	if !ok {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)

	changed := make(chan string, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	// The watchers end with ctx, which ends when this handler returns for any reason (before wg.Wait).
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	wg.Go(func() {
		// The stream ends when the device locks: the page then shows the lock screen.
		select {
		case <-locked:
			cancel()
		case <-ctx.Done():
		}
	})
	watched := map[string]func(){}
	defer func() {
		for _, stop := range watched {
			stop()
		}
	}()
	watchNew := func() {
		for _, t := range n.Teams() {
			id := t.ID.String()
			if watched[id] != nil {
				continue
			}
			ch, stop, err := n.Watch(id)
			if err != nil {
				continue
			}
			watched[id] = stop
			wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-ch:
						select {
						case changed <- id:
						case <-ctx.Done():
							return
						}
					}
				}
			})
		}
	}
	send := func(event string, data any) bool {
		b, _ := json.Marshal(data)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	watchNew()
	if !send("ready", map[string]int{"teams": len(watched)}) {
		return
	}
	tick := time.NewTicker(s.statusEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-changed:
			if !send("team", map[string]string{"team": id}) {
				return
			}
		case <-tick.C:
			n := len(watched)
			watchNew()
			if !send("status", map[string]bool{"teams_changed": len(watched) != n}) {
				return
			}
		}
	}
}

// QR is the answer of POST /api/qr: a QR code as an SVG path of unit squares on a size×size grid
// (without the quiet zone, which the page adds).
type QR struct {
	Size int    `json:"size"`
	Path string `json:"path"`
}

// qrCode renders text (an invite or link code, a safety number's payload) as a QR code. The text
// comes in the body, so it is in no URL.
func (s *Server) qr(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Text string `json:"text"`
	}
	if err := decode(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Text == "" || len(req.Text) > 2048 {
		writeErr(w, http.StatusBadRequest, "nothing to encode, or too long for a QR code")
		return
	}
	writeQR(w, req.Text)
}

func writeQR(w http.ResponseWriter, text string) {
	c, err := qr.Encode(text, qr.M)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "cannot make a QR code of this: "+err.Error())
		return
	}
	var b strings.Builder
	for y := 0; y < c.Size; y++ {
		for x := 0; x < c.Size; x++ {
			if c.Black(x, y) {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	writeJSON(w, http.StatusOK, QR{Size: c.Size, Path: b.String()})
}
