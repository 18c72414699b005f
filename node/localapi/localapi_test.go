package localapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/storage"
)

// newTestAPI starts one node (on a mocknet host, with its own store) and its API on a unix socket,
// and returns a client of it.
func newTestAPI(t *testing.T) *Client {
	t.Helper()
	st, err := storage.Create(t.TempDir(), storage.Options{Passphrase: []byte("pw"), KDF: storage.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	id, err := node.Init(st, "Nurse Phiri")
	if err != nil {
		t.Fatal(err)
	}
	sk, err := lcrypto.UnmarshalEd25519PrivateKey(id.Device.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	h, err := mn.AddPeer(sk, ma.StringCast("/ip4/127.0.0.1/tcp/4001"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{Store: st, Host: h, NoMDNS: true, SyncInterval: time.Hour, RedialInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	dir, err := os.MkdirTemp("", "fmapi") // short: unix socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Node: n}).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return NewClient(path)
}

// rawMessages returns a team's messages as the API's JSON objects.
func rawMessages(t *testing.T, c *Client, team string) []map[string]any {
	t.Helper()
	resp, err := c.open(context.Background(), http.MethodGet, "/v1/messages?team="+team, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("message %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// rawStatus returns GET /v1/status as a JSON object.
func rawStatus(t *testing.T, c *Client) map[string]any {
	t.Helper()
	var out map[string]any
	if err := c.do(context.Background(), http.MethodGet, "/v1/status", nil, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSendReplyTo: a reply names its parent by the short id send returned (or any unique prefix of
// 8 or more hex characters), and the message then carries the full id; a reply to a message the
// team does not have, or with an id that is not one, is refused with a plain error and sends nothing.
func TestSendReplyTo(t *testing.T) {
	c := newTestAPI(t)
	ctx := context.Background()
	team, err := c.CreateTeam(ctx, "Ward 3", "clinical")
	if err != nil {
		t.Fatal(err)
	}
	parent, err := c.Send(ctx, SendRequest{Team: team.ID, Text: "bed 4 needs a review"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{parent.ID[:8], strings.ToUpper(parent.ID[:12]), parent.ID} {
		reply, err := c.Send(ctx, SendRequest{Team: team.ID, Text: "on my way", ReplyTo: ref})
		if err != nil {
			t.Fatalf("reply to %q: %v", ref, err)
		}
		var got any
		for _, m := range rawMessages(t, c, team.ID) {
			if m["id"] == reply.ID {
				got = m["reply_to"]
			}
		}
		if got != parent.ID {
			t.Errorf("reply to %q: reply_to = %v; want %s", ref, got, parent.ID)
		}
	}
	before := len(rawMessages(t, c, team.ID))
	absent := "0123abcd"
	if strings.HasPrefix(parent.ID, absent) {
		absent = "3210dcba"
	}
	for _, tc := range []struct{ ref, says string }{
		{absent, "no message"},
		{absent + strings.Repeat("f", len(parent.ID)-len(absent)), "no message"},
		{parent.ID[:7], "at least 8"},
		{"not-an-id", "hex"},
		{parent.ID + "00", "hex"},
	} {
		_, err := c.Send(ctx, SendRequest{Team: team.ID, Text: "reply to nothing", ReplyTo: tc.ref})
		if err == nil {
			t.Errorf("reply to %q: accepted; want an error", tc.ref)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.says) || strings.Contains(msg, "node:") || strings.Contains(msg, "crdt:") || strings.Contains(msg, "\n") {
			t.Errorf("reply to %q: error %q; want one plain line that says %q", tc.ref, msg, tc.says)
		}
	}
	if after := len(rawMessages(t, c, team.ID)); after != before {
		t.Errorf("refused replies changed the team's messages from %d to %d", before, after)
	}
}

// TestLowDataShownQueued: in low-data mode a routine message is in its sender's own messages, marked
// queued, and status says the mode is on with it queued; once the mode is off it is no longer queued.
func TestLowDataShownQueued(t *testing.T) {
	c := newTestAPI(t)
	ctx := context.Background()
	team, err := c.CreateTeam(ctx, "Ward 3", "clinical")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetLowData(ctx, true); err != nil {
		t.Fatal(err)
	}
	sent, err := c.Send(ctx, SendRequest{Team: team.ID, Text: "stock count: 12 vials"})
	if err != nil {
		t.Fatal(err)
	}
	find := func() map[string]any {
		for _, m := range rawMessages(t, c, team.ID) {
			if m["id"] == sent.ID {
				return m
			}
		}
		return nil
	}
	if m := find(); m == nil || m["queued"] != true || m["text"] != "stock count: 12 vials" {
		t.Errorf("in low-data mode the sender's messages show %v for the queued message; want it, with \"queued\": true", m)
	}
	lowData := func() map[string]any {
		ld, _ := rawStatus(t, c)["low_data"].(map[string]any)
		return ld
	}
	if ld := lowData(); ld["on"] != true || ld["queued"] != 1.0 {
		t.Errorf("status low_data = %v in low-data mode with one message queued; want on, 1 queued", ld)
	}
	// A reply to the queued message names it as any other.
	if _, err := c.Send(ctx, SendRequest{Team: team.ID, Text: "and 3 of misoprostol", ReplyTo: sent.ID[:8]}); err != nil {
		t.Errorf("reply to the queued message: %v", err)
	}
	if _, err := c.SetLowData(ctx, false); err != nil {
		t.Fatal(err)
	}
	if m := find(); m == nil || m["queued"] != false {
		t.Errorf("after low-data mode went off the message shows as %v; want it, with \"queued\": false", m)
	}
	if ld := lowData(); ld["on"] != false || ld["queued"] != 0.0 {
		t.Errorf("status low_data = %v after the mode went off; want off, nothing queued", ld)
	}
}
