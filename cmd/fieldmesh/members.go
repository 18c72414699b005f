package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/join"
)

// Membership commands: team members|remove|promote, device link|remove, verify.

func teamMembershipCmds(g *globals) []*cobra.Command {
	members := &cobra.Command{
		Use:   "members TEAM",
		Short: "List a team's members, their devices, and whether you verified them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ms, err := g.client().Members(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(ms, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tDEVICES\tVERIFIED\tID")
				for _, m := range ms {
					role := "member"
					if m.Admin {
						role = "admin"
					}
					var devs []string
					for _, d := range m.Devices {
						devs = append(devs, d.Short+" "+printable(d.Label))
					}
					name := printable(m.Name)
					if m.Self {
						name += " (you)"
					}
					status := m.Status
					if m.Self {
						status = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, role, strings.Join(devs, ", "), status, m.ID[:8])
				}
				tw.Flush()
				for _, m := range ms {
					for _, d := range m.Equivocated {
						fmt.Fprintf(w, "ALERT: %s's device %s signed two different messages for one place in its chain: it may be cloned or compromised. Both are hidden; remove the device if you cannot explain it.\n", printable(m.Name), d)
					}
				}
			})
		},
	}
	remove := &cobra.Command{
		Use:   "remove TEAM MEMBER",
		Short: "Remove a member and all their devices (admins); the team moves to a new key they do not get",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().RemoveMember(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			return g.print(map[string]string{"removed": args[1]}, func(w io.Writer) {
				fmt.Fprintf(w, "removed %s; new messages use a key they do not have\n", printable(args[1]))
			})
		},
	}
	promote := &cobra.Command{
		Use:   "promote TEAM MEMBER",
		Short: "Make a member an admin (admins)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().Promote(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			return g.print(map[string]string{"promoted": args[1]}, func(w io.Writer) {
				fmt.Fprintf(w, "%s is now an admin\n", printable(args[1]))
			})
		},
	}
	return []*cobra.Command{members, remove, promote}
}

func deviceCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "device", Short: "Link a second device to yourself, or remove a lost one"}
	var (
		qr         bool
		ttl        time.Duration
		deviceName string
	)
	link := &cobra.Command{
		Use:   "link TEAM",
		Short: "Print a one-time code that links a new device (run `fieldmesh team join CODE` on it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTTL(ttl); err != nil {
				return err
			}
			inv, err := g.client().LinkDevice(cmd.Context(), args[0], ttl, deviceName)
			if err != nil {
				return err
			}
			return g.printCode(inv, qr, fmt.Sprintf("on the new device: fieldmesh team join CODE (works once, until %s)", inv.Expires))
		},
	}
	link.Flags().BoolVar(&qr, "qr", false, "also print the code as a QR code")
	link.Flags().StringVar(&deviceName, "device-name", "", `the new device's name, as your team will see it next to yours (default "device N")`)
	link.Flags().DurationVar(&ttl, "ttl", join.DefaultInviteTTL, "how long the code works (positive, at most "+join.MaxInviteTTL.String()+")")
	remove := &cobra.Command{
		Use:   "remove TEAM DEVICE",
		Short: "Remove one device (a lost phone) without removing its owner; DEVICE is its id (8+ hex chars)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().RemoveDevice(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			return g.print(map[string]string{"removed": args[1]}, func(w io.Writer) {
				fmt.Fprintf(w, "removed device %s; new messages use a key it does not have\n", printable(args[1]))
			})
		},
	}
	c.AddCommand(link, remove, deviceHistoryCmd(g))
	return c
}

func verifyCmd(g *globals) *cobra.Command {
	var (
		team    string
		mark    bool
		scanned string
		qr      bool
	)
	c := &cobra.Command{
		Use:   "verify MEMBER",
		Short: "Show the safety numbers between your device and a member's devices; --mark once they match",
		Long: "Compare the numbers with the member's screen, in person or on a call you trust, then run again\n" +
			"with --mark (or --scanned CODE with the code from their QR). If their keys change later,\n" +
			"`team members` and `messages` warn you.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			nums, err := g.client().Verify(cmd.Context(), team, args[0], mark || scanned != "", scanned)
			if err != nil {
				return err
			}
			return g.print(nums, func(w io.Writer) {
				for _, s := range nums {
					state := "not verified"
					switch {
					case s.Changed:
						state = "KEYS CHANGED since you verified"
					case s.Verified:
						state = "verified"
					}
					fmt.Fprintf(w, "%s, device %s %s (team %s): %s\n  %s\n", printable(s.Member), s.Device.Short(), printable(s.Label), printable(s.Team), state, s.Number)
					if qr {
						qrterminal.GenerateHalfBlock(s.QR, qrterminal.L, w)
					}
				}
			})
		},
	}
	f := c.Flags()
	f.StringVar(&team, "team", "", "look the member up in this team (default: any of yours)")
	f.BoolVar(&mark, "mark", false, "record the numbers shown as verified")
	f.StringVar(&scanned, "scanned", "", "the code scanned from the member's QR; must match, then marks verified")
	f.BoolVar(&qr, "qr", false, "also print each number as a QR code for the other device to scan")
	return c
}

// warnKeyChanges prints, on stderr, a warning for each verified member of the team whose keys changed.
func warnKeyChanges(ctx context.Context, g *globals, team string) {
	ms, err := g.client().Members(ctx, team)
	if err != nil {
		return
	}
	for _, m := range ms {
		if m.Status == string(node.KeysChanged) {
			fmt.Fprintf(os.Stderr, "warning: %s's keys changed since you verified them: check with `fieldmesh verify %q`\n", printable(m.Name), m.Name)
		}
	}
}
