package main

// The team lock policy: `team policy TEAM` shows it, and an admin sets it with --lock-after and
// --offline-lock-days.

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

func teamPolicyCmd(g *globals) *cobra.Command {
	var (
		after time.Duration
		days  uint16
	)
	c := &cobra.Command{
		Use:   "policy TEAM",
		Short: "Show the team's lock policy (admins set it with --lock-after and --offline-lock-days)",
		Long: `Show the team's lock policy, or set it (admins): every member device locks after --lock-after
without a command or a click in the web UI, and when it has not reached a member or relay of the team for
--offline-lock-days days. A device applies the shortest of its own settings (up --lock-after,
--lock-unreached) and every team's policy; a policy never lengthens them. 0 asks nothing. Setting the
policy replaces the previous one: give both values.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if f.Changed("lock-after") || f.Changed("offline-lock-days") {
				p := localapi.Policy{Team: args[0], OfflineLockDays: days}
				if after != 0 {
					p.LockAfter = after.String()
				}
				if err := (crdt.Policy{LockAfter: after, OfflineLockDays: days}).Validate(); err != nil {
					return fmt.Errorf("lock policy: --lock-after from %v to %v (or 0), --offline-lock-days at most %d",
						crdt.MinLockAfter, crdt.MaxLockAfter, crdt.MaxOfflineLockDays)
				}
				if err := g.client().SetPolicy(cmd.Context(), p); err != nil {
					return err
				}
			}
			p, err := g.client().Policy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(p, func(w io.Writer) {
				if !p.Set {
					fmt.Fprintln(w, "no team lock policy: each device's own settings apply")
					return
				}
				printTeamLock(w, "team lock policy:", localapi.TeamLockStatus{LockAfter: p.LockAfter, OfflineLockDays: p.OfflineLockDays})
			})
		},
	}
	c.Flags().DurationVar(&after, "lock-after", 0, "members' devices lock after this long without use (0 = no team limit)")
	c.Flags().Uint16Var(&days, "offline-lock-days", 0, "members' devices lock after this many days without reaching the team (0 = no team limit)")
	return c
}

// printTeamLock prints a lock policy on one line.
func printTeamLock(w io.Writer, label string, s localapi.TeamLockStatus) {
	after, days := "no limit", "no limit"
	if s.LockAfter != "" {
		after = s.LockAfter
	}
	if s.OfflineLockDays > 0 {
		days = fmt.Sprintf("%d days", s.OfflineLockDays)
	}
	fmt.Fprintf(w, "%s lock after %s idle; lock after %s without reaching the team\n", label, after, days)
}
