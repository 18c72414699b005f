// Command fieldmesh is the one fieldmesh binary: it initialises a device, runs the node daemon, and
// talks to a running daemon over its local API socket for everything else.
//
// Errors are one line on stderr ("fieldmesh: ...") and exit code 1.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/audit"
	"github.com/fieldmesh/fieldmesh/node/join"
	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/node/relay"
	"github.com/fieldmesh/fieldmesh/node/session"
	"github.com/fieldmesh/fieldmesh/node/webui"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/envelope"
	"github.com/fieldmesh/fieldmesh/sync/safetext"
)

type globals struct {
	data           string
	ui             string // up's --ui: the web UI's loopback address, "off" for none
	json           bool
	passphraseFile string
	logLevel       string
}

func main() {
	g := &globals{}
	root := newRoot(g)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "fieldmesh: "+oneLine(userError(g, err).Error()))
		os.Exit(1)
	}
}

// oneLine folds an error message onto one line and drops the Go package prefixes our packages put
// on their errors ("crdt: ", "localapi: "): they say where an error came from, which means nothing
// to the person reading it.
func oneLine(s string) string {
	s = stripPackagePrefixes(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// errorPrefixes are the prefixes our packages put on their error texts (the package names of the
// module, and the local API clients' "relay api"); TestErrorPrefixesCoverPackages keeps the list
// in step with the module.
var errorPrefixes = []string{
	"adversary", "attach", "audit", "chaos", "crdt", "device", "envelope", "epochkey", "export", "fhirtest", "fieldmesh", "framing",
	"gossipbench", "historyproto", "humancode", "identity", "join", "localapi", "lowdata", "meshconf", "mobile", "node", "photo",
	"proximity", "proximitytest", "recon", "record", "recordgw", "relay", "relay api", "relayclient", "relayproto", "safety", "seal", "senderkey", "sim",
	"storage", "teamkeys", "unixapi", "usage", "webui", "wire",
	"duty", "emul", "locked", "rawid", "safetext", "session", "wipeorder", "wipeproto", "wipeprototest",
}

// packagePrefix matches one of errorPrefixes at the start of the message or after another
// message's ": ", as in "bad reply-to id: crdt: bad id".
var packagePrefix = regexp.MustCompile(`(^|: )(?:` + strings.Join(errorPrefixes, "|") + `): `)

func stripPackagePrefixes(s string) string {
	for {
		t := packagePrefix.ReplaceAllString(s, "$1")
		if t == s {
			return s
		}
		s = t
	}
}

// userError rewrites an error for the person at the command line where the plain error would
// mislead: a client command that finds no node on a data directory holding no store at all was
// most likely given a mistyped --data, and starting a node there would create a second device.
func userError(g *globals, err error) error {
	notNode, notRelay := errors.Is(err, localapi.ErrNotRunning), errors.Is(err, relay.ErrNotRunning)
	if !notNode && !notRelay {
		return err
	}
	store := "keyring"
	if notRelay {
		store = relay.KeyFileName
	}
	if _, serr := os.Stat(filepath.Join(g.data, store)); serr == nil {
		return err
	}
	if notRelay {
		// A relay creates its store unattended on its first start, so that stays a way forward.
		return fmt.Errorf("no relay is running on %s, and it holds no relay store: check --data (a new relay starts with: fieldmesh relay)", g.data)
	}
	if _, serr := os.Stat(g.data); errors.Is(serr, os.ErrNotExist) {
		return fmt.Errorf("data directory %s does not exist: check --data", g.data)
	}
	return fmt.Errorf("no fieldmesh store in %s: check --data", g.data)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "fieldmesh",
		Short:         "An offline-first, end-to-end encrypted team messenger for health teams",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.data, "data", defaultDataDir(), "data directory (env FIELDMESH_DATA)")
	pf.BoolVar(&g.json, "json", false, "machine-readable JSON output")
	pf.StringVar(&g.passphraseFile, "passphrase-file", "", "read the store passphrase from this file (else $FIELDMESH_PASSPHRASE, else a prompt on a terminal, else one line of standard input)")
	pf.StringVar(&g.logLevel, "log-level", "info", "daemon log level: debug, info, warn, error")

	root.AddCommand(simCmd())
	root.AddCommand(initCmd(g), upCmd(g), statusCmd(g), teamCmd(g), sendCmd(g), messagesCmd(g), peersCmd(g),
		deviceCmd(g), verifyCmd(g), usageCmd(g), lowDataCmd(g), syncCmd(g), relayCmd(g), openCmd(g), dutyCmd(g), rotaCmd(g))
	root.AddCommand(recordCmd(g), auditCmd(g))
	root.AddCommand(attachmentCmd(g))
	root.AddCommand(lockCmds(g)...)
	return root
}

func defaultDataDir() string {
	if d := os.Getenv("FIELDMESH_DATA"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "fieldmesh")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "fieldmesh")
	}
	return "fieldmesh-data"
}

func (g *globals) socket() string { return filepath.Join(g.data, "api.sock") }

func (g *globals) client() *localapi.Client { return localapi.NewClient(g.socket()) }

// passphrase reads the store passphrase: $FIELDMESH_PASSPHRASE, else --passphrase-file, else a prompt
// on a terminal (twice when creating a store), else one line of standard input (read once, even
// when creating: there is no one to confirm it). An empty passphrase is refused.
func (g *globals) passphrase(creating bool) ([]byte, error) {
	if p := os.Getenv("FIELDMESH_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	if g.passphraseFile != "" {
		b, err := os.ReadFile(g.passphraseFile)
		if err != nil {
			return nil, fmt.Errorf("read passphrase file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return nil, errors.New("the passphrase file is empty")
		}
		return []byte(p), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return passphraseLine(os.Stdin)
	}
	fmt.Fprint(os.Stderr, "Passphrase: ")
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("empty passphrase")
	}
	if creating {
		fmt.Fprint(os.Stderr, "Passphrase again: ")
		p2, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, err
		}
		if string(p) != string(p2) {
			return nil, errors.New("the passphrases do not match")
		}
	}
	return p, nil
}

// maxPassphraseLine bounds the line passphraseLine reads, so a stray pipe cannot make it buffer
// without limit.
const maxPassphraseLine = 4096

// passphraseLine reads the passphrase as the first line of r (standard input that is not a
// terminal), without its line ending. It reads byte by byte so nothing after the line is consumed.
func passphraseLine(r io.Reader) ([]byte, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := r.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if len(line) == maxPassphraseLine {
				return nil, fmt.Errorf("the passphrase line on standard input is longer than %d bytes", maxPassphraseLine)
			}
			line = append(line, b[0])
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return nil, errors.New("no passphrase: standard input is not a terminal and is empty; " +
					"give the passphrase as one line on standard input, in FIELDMESH_PASSPHRASE, or with --passphrase-file")
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the passphrase from standard input: %w", err)
		}
	}
	line = []byte(strings.TrimRight(string(line), "\r"))
	if len(line) == 0 {
		return nil, errors.New("empty passphrase on standard input: refused (give a passphrase as one line)")
	}
	return line, nil
}

func (g *globals) print(v any, text func(w io.Writer)) error {
	if g.json {
		enc := json.NewEncoder(os.Stdout)
		return enc.Encode(v)
	}
	text(os.Stdout)
	return nil
}

func storeErr(err error, dir string) error {
	switch {
	case errors.Is(err, storage.ErrWrongPassphrase):
		return errors.New("wrong passphrase")
	case errors.Is(err, storage.ErrNotInitialized):
		return fmt.Errorf("no fieldmesh store in %s (run: fieldmesh init --name NAME)", dir)
	case errors.Is(err, storage.ErrExists):
		return fmt.Errorf("a fieldmesh store already exists in %s", dir)
	case errors.Is(err, storage.ErrLocked):
		return errAlreadyRunning(dir)
	}
	return err
}

// errAlreadyRunning says that a node already runs on dir. There is no stop command: the node stops
// on Ctrl-C in its terminal, or on SIGTERM.
func errAlreadyRunning(dir string) error {
	return fmt.Errorf("a node is already running on %s (stop it with Ctrl-C where it runs, or send it SIGTERM)", dir)
}

// nodeAnswers reports whether a node (or relay) answers on the data directory's socket.
func (g *globals) nodeAnswers(ctx context.Context) bool {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := g.client().Status(ctx); err == nil {
		return true
	}
	_, err := g.client().LockState(ctx) // a locked node answers only its lock's routes
	return err == nil
}

// initialise creates the store and the device identity.
func (g *globals) initialise(name string) (*storage.Store, *node.Identity, error) {
	if name == "" {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, nil, errors.New("a display name is needed: use --name")
		}
		fmt.Fprint(os.Stderr, "Your name as your team will see it: ")
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		name = strings.TrimSpace(line)
		if name == "" {
			return nil, nil, errors.New("no name given")
		}
	}
	// The passphrase comes first: a refused one leaves nothing on disk.
	pass, err := g.passphrase(true)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(g.data, 0o700); err != nil {
		return nil, nil, err
	}
	st, err := storage.Create(g.data, storage.Options{Passphrase: pass})
	if err != nil {
		return nil, nil, storeErr(err, g.data)
	}
	id, err := node.Init(st, name)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, id, nil
}

func initCmd(g *globals) *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "init",
		Short: "Create this device's identity and encrypted store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, id, err := g.initialise(name)
			if err != nil {
				return err
			}
			defer st.Close()
			pid, err := node.PeerID(id.Device.ID())
			if err != nil {
				return err
			}
			out := map[string]string{"device": id.Device.ID().String(), "short": id.Device.ID().Short(), "peer_id": pid.String()}
			return g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "device %s (%s)\npeer   %s\ndata   %s\n", id.Device.ID().Short(), id.Name, pid, g.data)
			})
		},
	}
	c.Flags().StringVar(&name, "name", "", "your display name, as your team will see it")
	return c
}

func upCmd(g *globals) *cobra.Command {
	var (
		listen, bootstrap, relays []string
		noMDNS, lowData           bool
		name                      string
		notify                    *notifyOpts
		budgetMiB                 int64
	)
	c := &cobra.Command{
		Use:   "up",
		Short: "Run the node (first run: create the store)",
		Long: `Run the node until Ctrl-C (or SIGTERM). The first run creates the store: on a terminal it asks
for your name and a passphrase (twice); without one, give --name and the passphrase as one line on
standard input (or in FIELDMESH_PASSPHRASE). Later runs ask for the passphrase the same way.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(g.logLevel)
			if err != nil {
				return err
			}
			if g.nodeAnswers(cmd.Context()) {
				return errAlreadyRunning(g.data)
			}
			var st *storage.Store
			if _, serr := os.Stat(filepath.Join(g.data, "keyring")); errors.Is(serr, os.ErrNotExist) {
				if name == "" && !term.IsTerminal(int(os.Stdin.Fd())) {
					return fmt.Errorf("no fieldmesh store in %s yet: to create one without a terminal, "+
						"give --name NAME and the passphrase (one line on standard input, or FIELDMESH_PASSPHRASE)", g.data)
				}
				// On a terminal, say so before the prompts; otherwise only once it is done, so a
				// refusal stays one line.
				tty := term.IsTerminal(int(os.Stdin.Fd()))
				if tty {
					fmt.Fprintf(os.Stderr, "No store in %s yet: creating one.\n", g.data)
				}
				st, _, err = g.initialise(name)
				if err != nil {
					return err
				}
				if !tty {
					fmt.Fprintf(os.Stderr, "Created a new store in %s.\n", g.data)
				}
			} else {
				pass, err := g.passphrase(false)
				if err != nil {
					return err
				}
				st, err = session.Open(g.data, pass, logger, nil)
				if err != nil {
					return storeErr(err, g.data)
				}
			}
			defer st.Close()
			// Argon2id just used 64 MiB; hand it back to the OS rather than carry it as idle RSS.
			debug.FreeOSMemory()
			cfg := node.Config{ListenAddrs: listen, Bootstrap: bootstrap, NoMDNS: noMDNS, LowData: lowData, Relays: relays}
			if err := applyBudget(&cfg, budgetMiB); err != nil {
				return err
			}
			if err := notify.apply(&cfg, logger); err != nil {
				return err
			}
			return runDaemon(cmd.Context(), g, st, logger, cfg)
		},
	}
	f := c.Flags()
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (repeatable; default TCP and QUIC on all interfaces)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "peer to dial, as a multiaddr ending in /p2p/PEERID (repeatable)")
	f.BoolVar(&noMDNS, "no-mdns", false, "turn off local-network discovery")
	f.StringArrayVar(&relays, "relay", nil, "clinic relay to use, as a multiaddr ending in /p2p/PEERID (repeatable; remembered)")
	f.StringVar(&name, "name", "", "display name, used only when the store is created on first run")
	f.BoolVar(&lowData, "low-data", false, "start in low-data mode (send only urgent messages; see: fieldmesh low-data)")
	addLockFlags(f)
	addBudgetFlag(f, &budgetMiB)
	f.StringVar(&g.ui, "ui", envOr("FIELDMESH_UI", "127.0.0.1:0"), "web UI address: 127.0.0.1:PORT (0 = a free port), or off (env FIELDMESH_UI)")
	notify = addNotifyFlags(f)
	return c
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// runDaemon runs a node and its local API until SIGINT or SIGTERM.
func runDaemon(ctx context.Context, g *globals, st *storage.Store, logger *slog.Logger, cfg node.Config) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Store = st
	cfg.Logger = logger
	cfg.AuditFile = filepath.Join(g.data, audit.FileName)
	if envelope.NoSeal {
		logger.Warn("TEST BUILD (-tags fieldmesh_noseal): messages and connections are NOT encrypted; never use it for real")
	}
	// The web UI's address is checked and taken first, so a bad --ui fails before the node starts.
	var (
		ul  net.Listener
		err error
	)
	if g.ui != "off" {
		if ul, err = webui.Listen(g.ui); err != nil {
			return err
		}
		defer ul.Close()
	}
	scfg := sessionConfig(g)
	scfg.Node, scfg.Logger, scfg.OnWipe = cfg, logger, stop
	ses, err := session.Start(scfg, st)
	if err != nil {
		return err
	}
	defer ses.Close()
	go ses.Run(ctx)
	n, _, err := ses.Current()
	if err != nil {
		return err
	}
	l, err := localapi.Listen(g.socket())
	if err != nil {
		return err
	}
	defer os.Remove(g.socket())
	srv := &localapi.Gate{Locker: ses, Logger: logger}
	var ui *webui.Server
	uiErr := make(chan error, 1)
	if ul != nil {
		if ui, err = webui.New(webui.Config{Lock: ses, Logger: logger}, ul); err != nil {
			return err
		}
		srv.UILogin = ui.LoginURL
		go func() { uiErr <- ui.Serve(ctx, ul) }()
	} else {
		uiErr <- nil
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, l) }()
	s := n.Status()
	addrs := make([]string, 0, len(s.Addrs))
	for _, a := range s.Addrs {
		addrs = append(addrs, a.String())
	}
	if ui != nil {
		logger.Info("web UI", "url", ui.URL())
		if !g.json {
			fmt.Fprintf(os.Stderr, "Web UI on %s: open it with: fieldmesh open\n", ui.URL())
		}
	}
	logger.Info("node ready", "device", s.Device, "peer", s.PeerID.String(), "addrs", strings.Join(addrs, ","), "teams", s.Teams)
	if s.Teams == 0 && !g.json {
		printNextSteps(os.Stderr, g.data)
	}
	select {
	case <-ctx.Done():
		err = <-errc
	case err = <-errc:
	}
	logger.Info("node stopping")
	stop()
	if uerr := <-uiErr; err == nil {
		err = uerr
	}
	return err
}

func openCmd(g *globals) *cobra.Command {
	var printOnly bool
	c := &cobra.Command{
		Use:   "open",
		Short: "Open the running node's web UI in the browser (signed in)",
		Long: `Open the running node's web UI in the browser, signed in with the token of this start of the
node (it travels in the address's fragment, and the page removes it at once). With no browser to
open (no xdg-open, or --print), print the address instead: it signs in whoever opens it while this
node runs, so keep it to yourself.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := g.client().UI(cmd.Context())
			if err != nil {
				if strings.Contains(err.Error(), localapi.ErrNoUI.Error()) {
					return errors.New("this node serves no web UI: start it without --ui off")
				}
				return err
			}
			if g.json {
				return g.print(localapi.UI{URL: u}, nil)
			}
			if !printOnly {
				if xdg, lerr := exec.LookPath("xdg-open"); lerr == nil {
					if err := exec.Command(xdg, u).Start(); err == nil {
						fmt.Fprintln(os.Stderr, "Opened the web UI in your browser.")
						return nil
					}
				}
			}
			fmt.Fprintln(os.Stdout, u)
			fmt.Fprintln(os.Stderr, "Open this address in a browser on this device; it signs you in (keep it to yourself).")
			return nil
		},
	}
	c.Flags().BoolVar(&printOnly, "print", false, "print the address instead of opening a browser")
	return c
}

// printNextSteps tells a device that belongs to no team yet (always so on a first run) what to do
// next, with the commands to type; dataDir is named in them unless it is the default.
func printNextSteps(w io.Writer, dataDir string) {
	fm := "fieldmesh"
	if dataDir != defaultDataDir() {
		fm += " --data " + shellQuote(dataDir)
	}
	fmt.Fprintf(w, `
This device is in no team yet. Leave this node running and, in another terminal:
  start a team:        %[1]s team create NAME          (you become its admin)
  invite someone:      %[1]s team invite TEAM          (a one-time code; --qr shows a QR code)
  or join their team:  %[1]s team join CODE
  send a message:      %[1]s send TEAM "TEXT"
  read messages:       %[1]s messages TEAM --follow
TEAM is the team's name or the id that team list shows. Stop the node with Ctrl-C.

`, fm)
}

// shellQuote quotes s for a POSIX shell when it holds anything but plain path characters.
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("/._-+,:=@%", r)))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the running node's status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(s, func(w io.Writer) {
				fmt.Fprintf(w, "device  %s (%s)\npeer    %s\nteams   %d\npeers   %d\n", s.Short, s.Name, s.PeerID, s.Teams, s.Peers)
				for _, a := range s.Addrs {
					fmt.Fprintf(w, "listen  %s/p2p/%s\n", a, s.PeerID)
				}
				fmt.Fprintf(w, "catch-up: %d sessions, %d bytes sent, %d received, %d envelopes received\n",
					s.Sync.Sessions, s.Sync.BytesSent, s.Sync.BytesReceived, s.Sync.EnvelopesReceived)
				printLowData(w, s.LowData)
				printAttachmentStorage(w, s.Attachments)
				printTeamLock(w, "teams' policy:", s.TeamLock)
				if len(s.Relays) == 0 {
					fmt.Fprintf(w, "relays  none (a team admin's relay reaches this device through the team; or start with --relay ADDR)\n")
				}
				for _, r := range s.Relays {
					printRelay(w, r)
				}
			})
		},
	}
}

func teamCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "team", Short: "Create, list, invite to and join teams"}
	var kind string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a team (you become its admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := g.client().CreateTeam(cmd.Context(), args[0], kind)
			if err != nil {
				return err
			}
			return g.print(t, func(w io.Writer) { fmt.Fprintf(w, "created %s team %q (%s)\n", t.Kind, t.Name, t.ID[:8]) })
		},
	}
	create.Flags().StringVar(&kind, "kind", "clinical", "clinical or social (keep clinical and social talk apart)")

	var (
		qr  bool
		ttl time.Duration
	)
	invite := &cobra.Command{
		Use:   "invite TEAM",
		Short: "Print a one-time invite code for a team",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTTL(ttl); err != nil {
				return err
			}
			inv, err := g.client().Invite(cmd.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			return g.printCode(inv, qr, fmt.Sprintf("works once, until %s", inv.Expires))
		},
	}
	invite.Flags().BoolVar(&qr, "qr", false, "also print the code as a QR code")
	invite.Flags().DurationVar(&ttl, "ttl", join.DefaultInviteTTL, "how long the code works (positive, at most "+join.MaxInviteTTL.String()+")")

	joinCmd := &cobra.Command{
		Use:   "join CODE",
		Short: "Join a team with an invite code",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := g.client().Join(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(t, func(w io.Writer) { fmt.Fprintf(w, "joined %s team %q (%s)\n", t.Kind, t.Name, t.ID[:8]) })
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List your teams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ts, err := g.client().Teams(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(ts, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tMEMBERS\tMESSAGES\tID")
				for _, t := range ts {
					name := printable(t.Name)
					if t.Removed {
						name += " (you were removed)"
					}
					if t.LookAlike {
						name += " (looks like another team's name: check the id)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", name, t.Kind, t.Members, t.Messages, t.ID[:8])
				}
				tw.Flush()
			})
		},
	}
	c.AddCommand(create, invite, joinCmd, list, teamRelayCodeCmd(g))
	c.AddCommand(teamMembershipCmds(g)...)
	c.AddCommand(teamReviewCmd(g))
	c.AddCommand(teamPolicyCmd(g))
	return c
}

func sendCmd(g *globals) *cobra.Command {
	var (
		req      localapi.SendRequest
		file     string
		allowIDs bool
	)
	c := &cobra.Command{
		Use:   "send TEAM [TEXT]",
		Short: "Send a message to a team (returns once it is safely stored)",
		Long: `Send a message to a team; it returns once the message is safely stored on this device. The text
is the argument, or the contents of --file F (--file - reads standard input), at most 16 KiB (16384
bytes) of UTF-8 either way; one newline at its end is dropped.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := messageInput(args[1:], file, os.Stdin)
			if err != nil {
				return err
			}
			req.Team, req.Text = args[0], text
			t, err := preSend(cmd.Context(), g, &req, allowIDs)
			if err != nil {
				return err
			}
			s, err := g.client().Send(cmd.Context(), req)
			if err != nil {
				return err
			}
			return g.print(s, func(w io.Writer) { fmt.Fprintln(w, sentLine(s.ID[:8], t)) })
		},
	}
	f := c.Flags()
	f.BoolVar(&allowIDs, "allow-identifiers", false, "send even if the text looks like it holds a raw NHS number, date of birth or phone number")
	f.StringVar(&req.Priority, "priority", "routine", "routine, urgent or emergency")
	f.StringVar(&req.Patient, "patient", "", "patient reference (sealed like the text; keep identifiers minimal)")
	f.StringVar(&req.ReplyTo, "reply-to", "", "id of the message this replies to: its short id, as send and messages print it")
	attachFlag(f, &req)
	f.StringVar(&file, "file", "", "read the text from this file (- for standard input) instead of the argument")
	f.BoolVar(&req.ForRecord, "for-record", false, "ask for the message to be filed to the health record (clinical teams; see: fieldmesh record sync)")
	return c
}

func messagesCmd(g *globals) *cobra.Command {
	var follow bool
	c := &cobra.Command{
		Use:   "messages TEAM",
		Short: "Show a team's messages",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			enc := json.NewEncoder(os.Stdout)
			if !g.json {
				warnKeyChanges(ctx, g, args[0])
			}
			// The start of each message shown, for the replies to it that follow (a reply comes
			// after what it answers).
			gists := map[string]string{}
			err := g.client().Messages(ctx, args[0], follow, func(m localapi.Message) error {
				if g.json {
					return enc.Encode(m)
				}
				gists[m.ID] = gist(m)
				_, err := io.WriteString(os.Stdout, messageText(m, gists))
				return err
			})
			if ctx.Err() != nil {
				return nil
			}
			if err == localapi.ErrNodeStopped {
				// The node ended the stream as it stopped: the end of following, not a failure.
				fmt.Fprintln(os.Stderr, "fieldmesh: the node stopped")
				return nil
			}
			return err
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new messages as they arrive, until Ctrl-C or the node stops")
	return c
}

// messageText is the human form of a message: a line with its short id, time, author, priority,
// patient reference, text and what is known of it (queued, received, read), then, for a reply, an
// indented line naming the message it answers, with the start of that message if it was shown
// (gists, by id).
func messageText(m localapi.Message, gists map[string]string) string {
	t, _ := time.Parse(time.RFC3339Nano, m.Time)
	line := fmt.Sprintf("%s  %s  %s", shortID(m.ID), t.Local().Format("2006-01-02 15:04"), printable(m.AuthorName))
	if m.Priority != "routine" {
		line += "  [" + strings.ToUpper(m.Priority) + "]"
	}
	if m.Patient != "" {
		line += "  (patient " + printable(m.Patient) + ")"
	}
	if m.ForRecord && m.FiledTo == "" {
		line += "  [for the record]"
	}
	state := ""
	switch {
	case m.FiledTo != "":
		state = "  (filed to record " + printable(m.FiledTo) + ")"
	case m.Queued:
		state = "  (queued: not sent yet, low-data mode)"
	case m.Read > 0:
		state = fmt.Sprintf("  (read by %d)", m.Read)
	case m.Received > 0:
		state = fmt.Sprintf("  (received by %d)", m.Received)
	}
	out := fmt.Sprintf("%s: %s%s\n", line, printable(m.Text), state)
	if m.ReplyTo != "" {
		re := "          ↳ re " + shortID(m.ReplyTo)
		if g, ok := gists[m.ReplyTo]; ok {
			re += " " + g
		}
		out += re + "\n"
	}
	return out
}

// gist is the start of a message as a reply quotes it: its author and its first words, on one line:
// "(Dr Banda): Bed 4 BP 160/110 two hours after delivery…".
func gist(m localapi.Message) string {
	const maxRunes = 48
	words := strings.Fields(printable(m.Text))
	text, cut := "", false
	for _, w := range words {
		if len([]rune(text))+1+len([]rune(w)) > maxRunes {
			cut = true
			break
		}
		if text != "" {
			text += " "
		}
		text += w
	}
	if text == "" && len(words) > 0 {
		text = string([]rune(words[0])[:maxRunes])
	}
	if cut {
		text = strings.TrimRight(text, ",;:.") + "…"
	}
	return "(" + printable(m.AuthorName) + "): " + text
}

// shortID is the short form of a message id, as send prints it and --reply-to takes it.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func peersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "List connected peers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, err := g.client().Peers(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(ps, func(w io.Writer) {
				for _, p := range ps {
					short := p.Device
					if len(short) > 8 {
						short = short[:8]
					}
					if p.Relay {
						short = "relay   "
					}
					fmt.Fprintf(w, "%s  %s  %s\n", short, p.PeerID, strings.Join(p.Addrs, " "))
				}
			})
		},
	}
}

// printable neutralises control characters (terminal escape sequences among them) in text that came
// from other devices, keeping line breaks and tabs, and shows bidi controls and invisible format
// characters as visible marks (sync/safetext), so text reads in the order it was written.
func printable(s string) string { return safetext.Display(s) }

// checkTTL refuses a code lifetime of zero or less, which the node would otherwise read as "the
// default" and hand out a code that works for a day.
func checkTTL(ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("bad --ttl %s: a code's lifetime must be positive, e.g. 2h (the default is %s)", ttl, join.DefaultInviteTTL)
	}
	return nil
}

// printCode prints a one-time code (an invite or a device link), optionally as a QR code, then a line
// saying how to use it; with --json, the code's JSON.
func (g *globals) printCode(inv localapi.Invite, qr bool, how string) error {
	return g.print(inv, func(w io.Writer) {
		fmt.Fprintf(w, "%s\n", inv.Code)
		if qr {
			qrterminal.GenerateHalfBlock(inv.Code, qrterminal.L, w)
		}
		fmt.Fprintln(w, how)
	})
}
