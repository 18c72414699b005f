package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/node/session"
	"github.com/fieldmesh/fieldmesh/storage"
	"github.com/fieldmesh/fieldmesh/sync/wipeorder"
)

// Lock and wipe commands: lock, unlock, wipe, remote-wipe; and up's lock flags.

// lockFlags are up's lock settings (node/session.Config).
var lockFlags struct {
	after, unreached time.Duration
}

// addLockFlags adds up's lock flags.
func addLockFlags(f *pflag.FlagSet) {
	f.DurationVar(&lockFlags.after, "lock-after", session.DefaultIdleLock,
		"lock after this long without a command or a click in the web UI (0 = never)")
	f.DurationVar(&lockFlags.unreached, "lock-unreached", session.DefaultUnreachedLock,
		"lock when no member or relay of any team was reached for this long (0 = never)")
}

// sessionConfig is the lock part of the daemon's configuration.
func sessionConfig(g *globals) session.Config {
	off := func(d time.Duration) time.Duration {
		if d <= 0 {
			return -1
		}
		return d
	}
	return session.Config{Dir: g.data, IdleLock: off(lockFlags.after), UnreachedLock: off(lockFlags.unreached)}
}

func lockCmds(g *globals) []*cobra.Command {
	lock := &cobra.Command{
		Use:   "lock",
		Short: "Lock the device now: the node forgets its keys until: fieldmesh unlock",
		Long: `Lock the device now. The running node closes the encrypted store and overwrites the store key
and every team key it held in memory; nothing readable is served until you unlock. Messages that
arrive meanwhile are kept sealed and read at unlock. The node also locks by itself after --lock-after
without use (default 5 minutes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.client().Lock(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(st, func(w io.Writer) { fmt.Fprintln(w, "locked: unlock with: fieldmesh unlock") })
		},
	}
	unlock := &cobra.Command{
		Use:   "unlock",
		Short: "Unlock the device with its passphrase",
		Long: `Unlock the device with its passphrase (asked on a terminal; else FIELDMESH_PASSPHRASE,
--passphrase-file, or one line of standard input). After a first wrong passphrase you may retry at
once; after more, the next try waits 1 s, then 2 s, 4 s, and so on up to an hour; restarting the node
does not reset the wait.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := g.client()
			st, err := c.LockState(cmd.Context())
			if err != nil {
				return err
			}
			if !st.Locked {
				return g.print(st, func(w io.Writer) { fmt.Fprintln(w, "not locked") })
			}
			if st.Wait > 0 {
				wait := time.Duration(st.Wait * float64(time.Second))
				return fmt.Errorf("too many wrong passphrases: try again in %s", max(time.Second, wait.Round(time.Second)))
			}
			pass, err := g.passphrase(false)
			if err != nil {
				return err
			}
			st, err = c.Unlock(cmd.Context(), string(pass))
			clear(pass)
			if err != nil {
				return err
			}
			return g.print(st, func(w io.Writer) { fmt.Fprintln(w, "unlocked") })
		},
	}
	var yes bool
	wipe := &cobra.Command{
		Use:   "wipe --yes",
		Short: "Destroy this device's store for good (the panic button)",
		Long: `Destroy this device's store for good: the wrapped store key is overwritten and deleted first
(after that nothing in the data directory can be opened, with or without the passphrase), then
every file of the data directory. A running node does it and stops; without one, it is done here.
There is no undo. The device's teams keep everything it sent; an admin should also remove the device
from its teams (fieldmesh device remove).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes {
				return errors.New("this destroys every message and key on this device: run again with --yes")
			}
			err := g.client().Wipe(cmd.Context())
			if errors.Is(err, localapi.ErrNotRunning) {
				err = wipeOffline(g.data)
			}
			if err != nil {
				return err
			}
			return g.print(map[string]bool{"wiped": true}, func(w io.Writer) { fmt.Fprintln(w, "wiped: no key and no file of the store is left") })
		},
	}
	wipe.Flags().BoolVar(&yes, "yes", false, "confirm: destroy the store")
	var ttl time.Duration
	remote := &cobra.Command{
		Use:   "remote-wipe TEAM DEVICE",
		Short: "Remove a lost device from the team and order it to wipe itself (admins)",
		Long: `Remove a lost device from the team (the team re-keys without it at once, as with device
remove) and issue a signed wipe order for it. Your device, your relays and the members you meet
carry the order; the lost device asks every peer it meets for orders naming it, and wipes itself
when it gets this one, even though it is no longer a member. The order names only the device, you
and a validity window (--ttl, default 90 days), nothing of the team. DEVICE is its id (8+ hex chars,
from: fieldmesh team members TEAM). A device removed from the team earlier can be ordered wiped too:
then only the order is issued.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 || ttl > wipeorder.MaxLifetime {
				return fmt.Errorf("--ttl must be positive and at most %v", wipeorder.MaxLifetime)
			}
			out, err := g.client().RemoteWipe(cmd.Context(), args[0], args[1], ttl.String())
			if err != nil {
				return err
			}
			return g.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "device %s removed; wipe order issued, carried until %s\n", out.Target[:8], out.Expires)
			})
		},
	}
	remote.Flags().DurationVar(&ttl, "ttl", wipeorder.DefaultLifetime, "how long the order is carried")
	return []*cobra.Command{lock, unlock, wipe, remote}
}

// wipeOffline wipes the store in dir without a running node: the keyring first, then every file.
func wipeOffline(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "keyring")); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no fieldmesh store in %s: check --data", dir)
	}
	if err := storage.Wipe(dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}
