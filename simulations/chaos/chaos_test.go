//go:build chaos

package chaos

// TestChaos is the chaos run of issue #5 on real processes: it needs Linux, root, iproute2,
// nftables and tcpdump, and is built only with -tags chaos (run.sh, make chaos). Flags follow
// -args:
//
//	-chaos.size short|long   short for CI (about 4 minutes), long for make chaos (about 20)
//	-chaos.seed N            the schedule's seed (default: random, printed)
//	-chaos.relay auto|on|off run a relay that every device uses (auto: when the binary has the commands)
//	-chaos.control           build with -tags fieldmesh_noseal: passes only if the scans FIND plaintext
//	-chaos.bin PATH          use this binary instead of building one
//	-chaos.prefix P          network namespace prefix (run.sh passes one so its trap can clean up)
//	-chaos.keep              keep the run's directory (data, logs, capture) even when it passes

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	flagSize    = flag.String("chaos.size", "short", "short (CI) or long (make chaos)")
	flagSeed    = flag.Uint64("chaos.seed", 0, "schedule seed (0: random)")
	flagRelay   = flag.String("chaos.relay", "auto", "auto, on or off")
	flagControl = flag.Bool("chaos.control", false, "control run: build with -tags fieldmesh_noseal and require the scans to find plaintext")
	flagBin     = flag.String("chaos.bin", "", "prebuilt fieldmesh binary (default: build ./cmd/fieldmesh)")
	flagPrefix  = flag.String("chaos.prefix", "", "network namespace prefix (default: random)")
	flagKeep    = flag.Bool("chaos.keep", false, "keep the run's directory")
)

// noSealTag is the test-only build tag that turns sealing off.
const noSealTag = "fieldmesh_noseal"

func TestChaos(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatal("the chaos run needs Linux network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the chaos run needs root (ip netns, nft, tc, tcpdump)")
	}
	for _, tool := range []string{"ip", "nft", "tc", "tcpdump", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install -y iproute2 nftables tcpdump)", tool)
		}
	}
	var size Size
	switch *flagSize {
	case "short":
		size = Short
	case "long":
		size = Long
	default:
		t.Fatalf("-chaos.size %q: want short or long", *flagSize)
	}
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	prefix := *flagPrefix
	if prefix == "" {
		prefix = NewPrefix()
	}

	root, err := os.MkdirTemp("/tmp", prefix+"-") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if *flagKeep || t.Failed() {
			t.Logf("kept %s", root)
			return
		}
		os.RemoveAll(root)
	})

	bin := *flagBin
	if bin == "" {
		bin = build(t, root, *flagControl)
	} else if *flagControl {
		t.Logf("control run with the prebuilt %s: it must have been built with -tags %s", bin, noSealTag)
	}
	relay := false
	switch *flagRelay {
	case "on":
		relay = true
	case "off":
	case "auto":
		ok, why := RelayCommands(bin)
		relay = ok
		if !ok {
			t.Logf("relay: off (%s); the devices bootstrap to each other", why)
		}
	default:
		t.Fatalf("-chaos.relay %q: want auto, on or off", *flagRelay)
	}

	// Ctrl-C and kill end the run through its context, so the lab is torn down; so does the
	// test's own deadline, with time to spare before go test's timeout panic (which runs no
	// cleanup; run.sh's trap is the last resort).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Minute))
		defer cancel()
	}
	t.Logf("chaos %s: seed %d, namespaces %s-*, directory %s, binary %s", size.Name, seed, prefix, root, bin)
	start := time.Now()
	rep, err := Run(ctx, Config{
		Size: size, Bin: bin, Root: root, Prefix: prefix, Seed: seed, Relay: relay, Control: *flagControl,
		// Progress goes straight to stderr, one line each, as it happens.
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "chaos: "+format+"\n", args...) },
	})
	if rep != nil {
		fmt.Fprintf(os.Stderr, "\n%s  wall time: %v\n\n", rep, time.Since(start).Round(time.Second))
		for _, g := range rep.Scans {
			for i, h := range g.Hits {
				if i == 5 {
					fmt.Fprintf(os.Stderr, "  %s: and %d more hits\n", g.Name, len(g.Hits)-5)
					break
				}
				fmt.Fprintf(os.Stderr, "  hit in %s: %s\n", g.Name, h)
			}
		}
		for i, p := range rep.Problems {
			if i == 40 {
				t.Errorf("and %d more problems", len(rep.Problems)-40)
				break
			}
			t.Errorf("%s", p)
		}
	}
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	if rep.Relay != relay {
		t.Fatalf("the run says relay=%v; asked for %v", rep.Relay, relay)
	}
	if size.Name == "short" && time.Since(start) > 5*time.Minute {
		t.Errorf("the short run took %v; CI's budget is 5 minutes", time.Since(start).Round(time.Second))
	}
}

// build builds ./cmd/fieldmesh into dir, with -tags fieldmesh_noseal for a control run (which
// fails at once if no file in the module has that build constraint: the tag would be a no-op).
func build(t *testing.T, dir string, control bool) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v %s", err, out)
	}
	mod := filepath.Dir(strings.TrimSpace(string(out)))
	args := []string{"build", "-o", filepath.Join(dir, "fieldmesh")}
	if control {
		if !hasBuildTag(t, mod, noSealTag) {
			t.Fatalf("control run: no Go file in %s has a %q build constraint, so -tags %s changes nothing and the control cannot find plaintext", mod, noSealTag, noSealTag)
		}
		args = append(args, "-tags", noSealTag)
	}
	args = append(args, "./cmd/fieldmesh")
	cmd := exec.Command("go", args...)
	cmd.Dir = mod
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built fieldmesh %s in %v", strings.Join(args[3:len(args)-1], " "), time.Since(start).Round(time.Millisecond))
	return filepath.Join(dir, "fieldmesh")
}

// hasBuildTag reports whether a .go file under mod has a //go:build line that names tag.
func hasBuildTag(t *testing.T, mod, tag string) bool {
	found := false
	err := filepath.WalkDir(mod, func(path string, d fs.DirEntry, err error) error {
		if err != nil || found {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != mod {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "//go:build") && strings.Contains(line, tag) {
				found = true
			}
			if strings.HasPrefix(line, "package ") {
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(fmt.Errorf("looking for the %s build tag: %w", tag, err))
	}
	return found
}
