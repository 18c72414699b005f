package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// The relay of issue #5 is driven through four commands (cmd/fieldmesh/relay.go):
//
//	fieldmesh relay --listen MULTIADDR   the relay daemon, in its own data directory (a key file, no passphrase)
//	fieldmesh team relay-code TEAM       on a team admin's device: {"code": ..., "topic": ...}
//	fieldmesh relay admit CODE           against the running relay's data directory (its API socket)
//	fieldmesh up --relay MULTIADDR       a device that uses the relay
//
// RelayCommands reports whether the binary has all four, and if not, what is missing.
func RelayCommands(bin string) (bool, string) {
	var missing []string
	help := func(args ...string) string {
		out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
		if err != nil {
			return ""
		}
		return string(out)
	}
	// cobra prints the parent's help for an unknown subcommand with exit 0, so look for the
	// subcommand's own usage line rather than trusting the exit status.
	if h := help("relay"); !strings.Contains(h, "fieldmesh relay") || !strings.Contains(h, "--listen") {
		missing = append(missing, "fieldmesh relay --listen")
	}
	if h := help("relay", "admit"); !strings.Contains(h, "fieldmesh relay admit") {
		missing = append(missing, "fieldmesh relay admit")
	}
	if h := help("team", "relay-code"); !strings.Contains(h, "relay-code") {
		missing = append(missing, "fieldmesh team relay-code")
	}
	if h := help("up"); !strings.Contains(h, "--relay") {
		missing = append(missing, "fieldmesh up --relay")
	}
	if len(missing) > 0 {
		return false, "the binary has no " + strings.Join(missing, ", no ")
	}
	return true, ""
}

// relayReady marks the relay daemon's readiness line, which also names its peer id (peer=...).
const relayReady = `msg="relay ready"`

var peerInLine = regexp.MustCompile(`(?:peer=|/p2p/)(12D3Koo[1-9A-HJ-NP-Za-km-z]+)`)

// startRelay runs `fieldmesh relay` on the relay's host and learns its peer id from the readiness
// line (a peer= attribute or a /p2p/ address).
func startRelay(ctx context.Context, r *proc) error {
	d, err := r.start(ctx, 60*time.Second, relayReady, "relay", "--listen=/ip4/"+r.Host.Addr+"/tcp/"+Port)
	if err != nil {
		return err
	}
	m := peerInLine.FindStringSubmatch(d.line)
	if m == nil {
		return fmt.Errorf("relay: the readiness line names no peer id (peer=12D3Koo... or /p2p/12D3Koo...): %q", d.line)
	}
	r.Peer = m[1]
	return nil
}

// admitRelay asks the team's admin for a relay code and gives it to the relay.
func admitRelay(ctx context.Context, admin, r *proc, team string) error {
	res, err := admin.cli(ctx, 60*time.Second, "team", "relay-code", team, "--json")
	if err != nil {
		return err
	}
	if err := res.err(); err != nil {
		return fmt.Errorf("%s: %w", admin.Label, err)
	}
	var out struct {
		Code string `json:"code"`
	}
	if json.Unmarshal([]byte(res.stdout), &out) != nil || out.Code == "" {
		// Not JSON with a "code": take the first word of the output.
		f := strings.Fields(res.stdout)
		if len(f) == 0 {
			return errors.New("relay: team relay-code printed nothing")
		}
		out.Code = f[0]
	}
	res, err = r.cli(ctx, 60*time.Second, "relay", "admit", out.Code)
	if err != nil {
		return err
	}
	return res.err()
}
