package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Subnet is the only address range the lab uses. Every address lives inside the run's own
// network namespaces; nothing is routed to or from the machine's other interfaces.
const Subnet = "10.77.0.0/24"

var validPrefix = regexp.MustCompile(`^[a-z0-9]{3,16}$`)

// nftTable is the name of the hub's bridge-family nftables table.
const nftTable = "fmchaos"

// A Lab is a star network of network namespaces: a hub namespace holding a bridge, and one
// namespace per host, joined to the bridge by a veth pair (the hub end is the host's port). Every
// frame between two hosts crosses the hub, which is where the lab drops, slows and captures
// traffic:
//   - partitions are nftables rules in the hub's bridge forward chain that drop all traffic
//     between two sets of hosts, or a host's port set down;
//   - loss is a random-drop rule (numgen random mod 100 < pct) on a port, both ways;
//   - slow links are a tbf qdisc on both ends of a host's veth pair;
//   - the capture is one tcpdump -i any in the hub (it sees each bridged frame on the port it came
//     in by and again on the port it leaves by; frames dropped by the bridge only once).
//
// Names start with the lab's prefix, so parallel labs do not collide and a crashed run's leftovers
// can be found (Cleanup, or run.sh's trap). Methods are safe for concurrent use.
type Lab struct {
	prefix string
	hub    string

	mu       sync.Mutex
	hosts    []*Host
	loss     map[*Host]int  // percentage dropped on the port, both ways
	cut      [2][]*Host     // the partition, if any: no traffic between cut[0] and cut[1]
	down     map[*Host]bool // ports set down
	slow     map[*Host]string
	captures []*exec.Cmd
}

// A Host is one network namespace in a Lab, with one address.
type Host struct {
	Name string // label, e.g. "d3" or "relay"
	NS   string // network namespace
	Addr string // IPv4 address in Subnet
	port string // the veth end in the hub
}

// NewLab creates the hub namespace, its bridge and the nftables table. prefix must be short (the
// namespace names are prefix-NAME) and unique to the run. Call Cleanup even if NewLab fails.
func NewLab(ctx context.Context, prefix string) (*Lab, error) {
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("chaos: namespace prefix %q: want 3 to 16 lower-case letters and digits", prefix)
	}
	l := &Lab{prefix: prefix, hub: prefix + "-hub",
		loss: map[*Host]int{}, down: map[*Host]bool{}, slow: map[*Host]string{}}
	steps := [][]string{
		{"netns", "add", l.hub},
		{"-n", l.hub, "link", "set", "lo", "up"},
		{"-n", l.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", l.hub, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return l, err
		}
	}
	return l, l.applyRules(ctx)
}

// AddHost creates a namespace joined to the bridge, with address 10.77.0.octet/24.
func (l *Lab) AddHost(ctx context.Context, name string, octet int) (*Host, error) {
	if octet < 2 || octet > 254 {
		return nil, fmt.Errorf("chaos: host octet %d out of range", octet)
	}
	l.mu.Lock()
	h := &Host{Name: name, NS: l.prefix + "-" + name, Addr: "10.77.0." + strconv.Itoa(octet),
		port: "p" + strconv.Itoa(len(l.hosts))}
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	steps := [][]string{
		{"netns", "add", h.NS},
		{"-n", h.NS, "link", "set", "lo", "up"},
		// Both ends are created straight into their namespaces: no name in the root namespace.
		{"link", "add", h.port, "netns", l.hub, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"-n", l.hub, "link", "set", h.port, "master", "br0"},
		{"-n", l.hub, "link", "set", h.port, "up"},
		{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Command returns a command that runs in the host's namespace. ip netns exec execs the program,
// so the command's process is the program itself (its pid is the program's pid).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Partition drops all traffic between the hosts of a and the hosts of b, replacing any earlier
// partition.
func (l *Lab) Partition(ctx context.Context, a, b []*Host) error {
	l.mu.Lock()
	l.cut = [2][]*Host{slices.Clone(a), slices.Clone(b)}
	l.mu.Unlock()
	return l.applyRules(ctx)
}

// SetLoss drops pct percent of the frames through h's port in each direction; 0 removes the rule.
func (l *Lab) SetLoss(ctx context.Context, h *Host, pct int) error {
	l.mu.Lock()
	if pct == 0 {
		delete(l.loss, h)
	} else {
		l.loss[h] = pct
	}
	l.mu.Unlock()
	return l.applyRules(ctx)
}

// SetDown sets h's port in the hub down (the host is out of coverage) or up.
func (l *Lab) SetDown(ctx context.Context, h *Host, down bool) error {
	l.mu.Lock()
	l.down[h] = down
	l.mu.Unlock()
	state := "up"
	if down {
		state = "down"
	}
	return ip(ctx, "-n", l.hub, "link", "set", h.port, state)
}

// SetSlow limits both directions of h's link to rate (a tc rate such as "40kbit") with a token
// bucket filter; "" removes the limit. (This kernel has no netem: delay and jitter are the
// mocknet tests' business.)
func (l *Lab) SetSlow(ctx context.Context, h *Host, rate string) error {
	l.mu.Lock()
	had := l.slow[h] != ""
	if rate == "" {
		delete(l.slow, h)
	} else {
		l.slow[h] = rate
	}
	l.mu.Unlock()
	for _, end := range [][2]string{{l.hub, h.port}, {h.NS, "eth0"}} {
		var err error
		switch {
		case rate != "":
			// burst: at least one full frame plus a little; latency bounds the queue (frames that
			// would wait longer are dropped, like a congested uplink).
			err = run(ctx, "ip", "netns", "exec", end[0], "tc", "qdisc", "replace", "dev", end[1], "root",
				"tbf", "rate", rate, "burst", "4kb", "latency", "1s")
		case had:
			err = run(ctx, "ip", "netns", "exec", end[0], "tc", "qdisc", "del", "dev", end[1], "root")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// HealAll removes every partition, loss rule and rate limit, and sets every port up.
func (l *Lab) HealAll(ctx context.Context) error {
	l.mu.Lock()
	hosts := slices.Clone(l.hosts)
	l.cut = [2][]*Host{}
	clear(l.loss)
	l.mu.Unlock()
	var errs []error
	errs = append(errs, l.applyRules(ctx))
	for _, h := range hosts {
		errs = append(errs, l.SetDown(ctx, h, false), l.SetSlow(ctx, h, ""))
	}
	return errors.Join(errs...)
}

// applyRules replaces the hub's nftables table with one built from the current state, in one
// atomic nft transaction.
func (l *Lab) applyRules(ctx context.Context) error {
	l.mu.Lock()
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s\ndelete table bridge %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table bridge %s {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n", nftTable)
	if len(l.cut[0]) > 0 && len(l.cut[1]) > 0 {
		a, z := addrSet(l.cut[0]), addrSet(l.cut[1])
		fmt.Fprintf(&b, "\t\tip saddr %s ip daddr %s drop\n", a, z)
		fmt.Fprintf(&b, "\t\tip saddr %s ip daddr %s drop\n", z, a)
	}
	for _, h := range l.hosts {
		if pct := l.loss[h]; pct > 0 {
			fmt.Fprintf(&b, "\t\tiifname %q numgen random mod 100 < %d drop\n", h.port, pct)
			fmt.Fprintf(&b, "\t\toifname %q numgen random mod 100 < %d drop\n", h.port, pct)
		}
	}
	b.WriteString("\t}\n}\n")
	l.mu.Unlock()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.hub, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: nft: %v: %s\nruleset:\n%s", err, bytes.TrimSpace(out), b.String())
	}
	return nil
}

func addrSet(hs []*Host) string {
	addrs := make([]string, len(hs))
	for i, h := range hs {
		addrs[i] = h.Addr
	}
	return "{ " + strings.Join(addrs, ", ") + " }"
}

// Capture starts tcpdump on every port of the hub, writing the full frames to path and its own
// messages to logPath, and returns once tcpdump says it is listening. StopCaptures ends it.
func (l *Lab) Capture(ctx context.Context, path, logPath string) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	listening := make(chan struct{})
	var once sync.Once
	// -Z root: keep writing as root into the run's root-owned directory; -U: write each packet as
	// it comes, so a crash leaves a usable file; -s 0: whole frames.
	cmd := exec.Command("ip", "netns", "exec", l.hub, "tcpdump", "-i", "any", "-n", "-U", "-s", "0", "-Z", "root", "-w", path)
	cmd.Stdout = logf
	cmd.Stderr = &logWriter{file: logf, onLine: func(line string) {
		if strings.Contains(line, "listening on") {
			once.Do(func() { close(listening) })
		}
	}}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("chaos: starting tcpdump: %w", err)
	}
	l.mu.Lock()
	l.captures = append(l.captures, cmd)
	l.mu.Unlock()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case <-listening:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("chaos: tcpdump did not say it was listening within 15s; its log:\n%s", tail(logPath, 10))
	}
}

// StopCaptures ends every capture with SIGINT (tcpdump then flushes its file) and waits for it.
func (l *Lab) StopCaptures() error {
	l.mu.Lock()
	caps := l.captures
	l.captures = nil
	l.mu.Unlock()
	var errs []error
	for _, c := range caps {
		c.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("chaos: tcpdump: %w", err))
			}
		case <-time.After(15 * time.Second):
			c.Process.Kill()
			errs = append(errs, errors.New("chaos: tcpdump did not stop within 15s of SIGINT"))
		}
	}
	return errors.Join(errs...)
}

// Cleanup ends every process in the lab's namespaces (they were all started by this run) and
// deletes the namespaces, the veths and bridge with them. It is safe to call more than once and
// on a half-built lab.
func (l *Lab) Cleanup() error {
	l.StopCaptures()
	return CleanupPrefix(l.prefix)
}

// CleanupPrefix kills the processes in, and deletes, every network namespace whose name starts
// with prefix+"-". It is how a run that was killed is cleaned up after (run.sh calls it through
// the test binary's -chaos.cleanup flag too).
func CleanupPrefix(prefix string) error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("chaos: ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix+"-") {
			continue
		}
		ns := f[0]
		pids, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, p := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := exec.Command("ip", "netns", "del", ns).Run(); err != nil {
			errs = append(errs, fmt.Errorf("chaos: ip netns del %s: %w", ns, err))
		}
	}
	return errors.Join(errs...)
}

func ip(ctx context.Context, args ...string) error { return run(ctx, "ip", args...) }

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chaos: %s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
