package main

// The relay commands: `fieldmesh relay` runs a clinic relay (node/relay), `relay status` and `relay
// admit` are clients of its local API on DIR/api.sock, and `team relay-code` (on a device) prints the
// code that lets a relay carry a team.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/fieldmesh/fieldmesh/crypto/identity"
	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/node/relay"
	"github.com/fieldmesh/fieldmesh/node/relay/relayproto"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// relayCmd is `fieldmesh relay` and its subcommands.
func relayCmd(g *globals) *cobra.Command {
	var (
		listen    []string
		metrics   string
		retention time.Duration
		quota     string
		perTeam   string
		peers     []string
	)
	c := &cobra.Command{
		Use:   "relay",
		Short: "Run a clinic relay: store and forward sealed messages of admitted teams (it cannot read them)",
		Long: `Run a clinic relay until Ctrl-C. It stores and forwards the sealed messages of the teams it was
admitted for (fieldmesh relay admit), relays connections between their devices, and cannot open
anything it holds. Linked with other clinics' relays (--peer-relay), it reconciles with them the
teams both carry. Its store in the data directory is encrypted with a random key kept in
DIR/relay.key (mode 0600): there is no passphrase, so it restarts unattended; protect that file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(g.logLevel)
			if err != nil {
				return err
			}
			q, err := parseBytes(quota)
			if err != nil {
				return fmt.Errorf("bad --quota: %w", err)
			}
			var tq int64
			if perTeam != "" {
				if tq, err = parseBytes(perTeam); err != nil || tq <= 0 {
					return fmt.Errorf("bad --team-quota %q: want a positive size like 200MiB", perTeam)
				}
			}
			if retention <= 0 {
				return fmt.Errorf("bad --retention %s: must be positive", retention)
			}
			if _, err := os.Stat(filepath.Join(g.data, "keyring")); err == nil {
				return fmt.Errorf("%s holds a device's store: give the relay its own data directory (--data)", g.data)
			}
			var linked []peer.AddrInfo
			for _, s := range peers {
				ai, err := peer.AddrInfoFromString(s)
				if err != nil {
					return fmt.Errorf("bad --peer-relay %q: want the other relay's address ending in /p2p/PEERID, as its relay status prints it: %w", s, err)
				}
				linked = append(linked, *ai)
			}
			r, err := relay.New(relay.Config{
				Dir: g.data, ListenAddrs: listen, Retention: retention, Quota: q, TopicQuota: tq, Logger: logger,
				PeerRelays: linked,
			})
			if err != nil {
				return strip(err)
			}
			defer r.Close()
			return runRelay(cmd.Context(), g, r, logger, metrics)
		},
	}
	f := c.Flags()
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (repeatable; default TCP and QUIC on port 4001, all interfaces)")
	f.StringArrayVar(&peers, "peer-relay", nil, "another clinic's relay to link with, by its address ending in /p2p/PEERID (repeatable; its operator lists this one too): the two reconcile the teams both carry whenever they reach each other")
	f.StringVar(&metrics, "metrics", "", "serve Prometheus metrics on this local address, at /metrics (e.g. 127.0.0.1:9464)")
	f.DurationVar(&retention, "retention", relay.DefaultRetention, "how long to keep messages, from their timestamp")
	f.StringVar(&quota, "quota", "1GiB", "most bytes of messages to keep (e.g. 500MiB, 20GB); the oldest go first")
	f.StringVar(&perTeam, "team-quota", "", "most bytes of messages to keep for each team; a team over it loses its own oldest first (default: --quota divided by the teams carried)")
	c.AddCommand(relayStatusCmd(g), relayAdmitCmd(g), relayRevokeCmd(g), relayListCmd(g), relayForgetCmd(g))
	return c
}

func strip(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "relay: "))
}

// runRelay serves the relay's local API (and metrics) until SIGINT or SIGTERM.
func runRelay(ctx context.Context, g *globals, r *relay.Relay, logger *slog.Logger, metricsAddr string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := localapi.Listen(g.socket())
	if err != nil {
		return err
	}
	defer os.Remove(g.socket())
	errc := make(chan error, 2)
	go func() { errc <- r.ServeAPI(ctx, l) }()
	served := 1
	metricsAt := ""
	if metricsAddr != "" {
		ml, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics address: %w", err)
		}
		if ip := ml.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			logger.Warn("metrics are served on a non-loopback address: anyone who reaches it sees the relay's figures", "addr", ml.Addr().String())
		}
		metricsAt = ml.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", r.MetricsHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		go func() {
			if err := srv.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
		served++
	}
	s := r.Status()
	logger.Info("relay ready", "peer", s.PeerID, "addrs", strings.Join(s.Addrs, ","), "topics", len(s.Topics), "metrics", metricsAt)
	select {
	case <-ctx.Done():
	case err = <-errc:
		served--
		stop()
	}
	for ; served > 0; served-- {
		if e := <-errc; err == nil {
			err = e
		}
	}
	logger.Info("relay stopping")
	return err
}

func relayStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the running relay's status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := relay.NewAPIClient(g.socket()).Status(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(s, func(w io.Writer) {
				fmt.Fprintf(w, "relay      %s\n", s.PeerID)
				for _, a := range s.Addrs {
					fmt.Fprintf(w, "listen     %s/p2p/%s\n", a, s.PeerID)
				}
				fmt.Fprintf(w, "topics     %d carried\n", len(s.Topics))
				for _, t := range s.Topics {
					roster := "no roster yet (any holder of the team's relay key enrols)"
					if t.RosterSeq > 0 {
						roster = fmt.Sprintf("roster %d: %d member devices", t.RosterSeq, t.RosterMembers)
					}
					fmt.Fprintf(w, "  %s  %d envelopes, %s, %d devices (%d connected), %s\n",
						t.Topic, t.Envelopes, humanBytes(t.Bytes), t.Devices, t.Connected, roster)
				}
				pct := 0.0
				if s.Quota > 0 {
					pct = 100 * float64(s.Bytes) / float64(s.Quota)
				}
				fmt.Fprintf(w, "stored     %d envelopes, %s of the %s quota (%.1f%%)\n", s.Envelopes, humanBytes(s.Bytes), humanBytes(s.Quota), pct)
				fmt.Fprintf(w, "disk       %s\n", humanBytes(s.DiskBytes))
				fmt.Fprintf(w, "retention  %s\n", s.Retention)
				fmt.Fprintf(w, "peers      %d connected, %d enrolled now, %d devices seen\n", s.PeersConnected, s.Enrolled, s.PeersSeen)
				fmt.Fprintf(w, "refused    enrolments: %s\n", counts(s.RefusedEnrolments))
				fmt.Fprintf(w, "refused    envelopes: %s\n", counts(s.RefusedEnvelopes))
			})
		},
	}
}

// counts prints reason counts as "reason n, reason n" (sorted), or "none".
func counts(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func relayAdmitCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "admit CODE",
		Short: "Carry a team for its devices, with the relay code a team admin gave you",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := relayproto.ParseCode(args[0]); err != nil {
				return strip(err)
			}
			a, err := relay.NewAPIClient(g.socket()).Admit(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(a, func(w io.Writer) {
				if a.Added {
					fmt.Fprintf(w, "the relay now carries topic %s\n", a.Topic)
				} else {
					fmt.Fprintf(w, "the relay already carried topic %s\n", a.Topic)
				}
			})
		},
	}
}

func relayRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke TOPIC",
		Short: "Stop carrying a team (its topic as relay status lists it) and delete its sealed messages here",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rv, err := relay.NewAPIClient(g.socket()).Revoke(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(rv, func(w io.Writer) {
				fmt.Fprintf(w, "the relay no longer carries topic %s; its devices are no longer enrolled and its messages here are deleted\n", rv.Topic)
			})
		},
	}
}

// relayListCmd is `fieldmesh relay list` on a device: the relays its node uses.
func relayListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List this device's clinic relays: connected, enrolled teams, last reconciliation, problems",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, err := g.client().Relays(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(rs, func(w io.Writer) {
				if len(rs) == 0 {
					fmt.Fprintf(w, "no relays: a team admin's relay reaches this device through the team; or start with --relay ADDR\n")
				}
				for _, r := range rs {
					printRelay(w, r)
				}
			})
		},
	}
}

// printRelay prints one relay of a device, as status and relay list show it.
func printRelay(w io.Writer, r localapi.Relay) {
	state := "not connected"
	if r.Connected {
		state = "connected"
	}
	fmt.Fprintf(w, "relay   %s  %s (%s)\n", r.PeerID, state, r.From)
	for _, a := range r.Addrs {
		fmt.Fprintf(w, "        at %s\n", a)
	}
	var enrolled []string
	for _, t := range r.Enrolled {
		enrolled = append(enrolled, t[:8])
	}
	if len(enrolled) > 0 {
		fmt.Fprintf(w, "        enrolled: %s\n", strings.Join(enrolled, ", "))
	}
	for _, t := range slices.Sorted(maps.Keys(r.Refused)) {
		fmt.Fprintf(w, "        refused %s: %s\n", t[:8], r.Refused[t])
	}
	last := "never, since this node started"
	if r.LastSync != "" {
		last = r.LastSync
	}
	fmt.Fprintf(w, "        last reconciled: %s\n", last)
	for _, t := range slices.Sorted(maps.Keys(r.Waiting)) {
		since := "since its last reconciliation there"
		if !slices.Contains(r.Reconciled, t) {
			since = "since this node started (not yet reconciled there)"
		}
		fmt.Fprintf(w, "        waiting %s: %d envelopes stored %s\n", t[:8], r.Waiting[t], since)
	}
	if r.LastError != "" {
		fmt.Fprintf(w, "        problem: %s\n", r.LastError)
	}
}

// relayForgetCmd is `fieldmesh relay forget RELAY` on a device.
func relayForgetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "forget RELAY",
		Short: "Stop using a clinic relay (its peer id, or the start of it) on this device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := g.client().ForgetRelay(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := map[string]string{"peer_id": id}
			return g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "this device no longer uses relay %s (a team's relay announcement will not bring it back; --relay will)\n", id)
			})
		},
	}
}

// relayCode is the JSON output of `team relay-code`.
type relayCode struct {
	Code  string `json:"code"`
	Topic string `json:"topic"`
}

// teamRelayCodeCmd is `fieldmesh team relay-code TEAM`: the code is computed here from the team id that
// the node's team list gives and this admin device's id (the relay takes the team's first roster from it).
func teamRelayCodeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "relay-code TEAM",
		Short: "Print the code that lets a clinic relay carry a team (give it to the relay's operator)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := g.client().Teams(cmd.Context())
			if err != nil {
				return err
			}
			t, err := findTeam(ts, args[0])
			if err != nil {
				return err
			}
			if !t.Admin {
				return fmt.Errorf("only an admin of team %s can hand it to a relay", t.ID[:8])
			}
			id, err := crdt.ParseTeamID(t.ID)
			if err != nil {
				return fmt.Errorf("the node gave a bad team id: %w", err)
			}
			st, err := g.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			admin, err := identity.ParseDeviceID(st.Device)
			if err != nil {
				return fmt.Errorf("the node gave a bad device id: %w", err)
			}
			c := relayproto.CodeFor(id, admin)
			out := relayCode{Code: c.Encode(), Topic: c.Topic.Short()}
			return g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "%s\n", out.Code)
				fmt.Fprintf(w, "give it to the clinic relay's operator, who runs: fieldmesh relay admit CODE\n")
				fmt.Fprintf(w, "whoever has it can have a relay carry the team's sealed messages (topic %s); it opens none of them\n", out.Topic)
			})
		},
	}
}

// findTeam finds a team in the node's list the way the node does: by id, a unique id prefix of at least
// 8 characters, or a unique name.
func findTeam(ts []localapi.Team, ref string) (localapi.Team, error) {
	ref = strings.TrimSpace(ref)
	for _, t := range ts {
		if t.ID == strings.ToLower(ref) || (len(ref) >= 8 && strings.HasPrefix(t.ID, strings.ToLower(ref))) {
			return t, nil
		}
	}
	var found []localapi.Team
	for _, t := range ts {
		if t.Name == ref {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return localapi.Team{}, fmt.Errorf("unknown team: %q", ref)
	case 1:
		return found[0], nil
	default:
		return localapi.Team{}, fmt.Errorf("%d teams are called %q: use the team id", len(found), ref)
	}
}

// parseBytes reads a byte count: a number, optionally followed by B, KB, MB, GB, TB (powers of 1000) or
// KiB, MiB, GiB, TiB (powers of 1024).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	mult := map[string]float64{
		"": 1, "B": 1,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
	}[strings.ToUpper(unit)]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || num == "" {
		return 0, fmt.Errorf("%q is not a size (e.g. 1073741824, 500MiB, 20GB)", s)
	}
	n := v * mult
	if n < 1 || n > 1<<62 {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return int64(n), nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
