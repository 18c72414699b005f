package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldmesh/fieldmesh/node/lowdata"
	"github.com/fieldmesh/fieldmesh/node/usage"
)

// usageCmd prints what a health worker needs to claim data costs back: the month's totals, and the
// same bytes by day, by team, by protocol and by peer.
func usageCmd(g *globals) *cobra.Command {
	var month string
	c := &cobra.Command{
		Use:   "usage",
		Short: "Show the data this device sent and received, for claiming data costs",
		Long: `Show the data this device sent and received over fieldmesh in a month: totals per day,
per team, per protocol and for the busiest peers.

The counts are the bytes of fieldmesh's connections as the node sees them; encryption framing and
TCP/IP or QUIC headers add a few percent more on a phone bill, and other apps are not included.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if month != "" {
				if _, err := time.Parse("2006-01", month); err != nil {
					return fmt.Errorf("bad --month %q: want YYYY-MM, e.g. %s", month, time.Now().Format("2006-01"))
				}
			}
			r, err := g.client().Usage(cmd.Context(), month)
			if err != nil {
				return err
			}
			return g.print(r, func(w io.Writer) { printUsage(w, r) })
		},
	}
	c.Flags().StringVar(&month, "month", "", "month to report, YYYY-MM (default: this month)")
	return c
}

func printUsage(w io.Writer, r usage.Report) {
	fmt.Fprintf(w, "Data used by fieldmesh in %s: %s sent, %s received, %s in total\n",
		r.Month, billedBytes(r.Total.Sent), billedBytes(r.Total.Received), billedBytes(r.Total.Total))
	if r.Total.Total == 0 {
		return
	}
	printAttachmentUsage(w, r)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// section starts a table: its title, then the header row with what the rows name.
	section := func(title, what string) {
		tw.Flush()
		fmt.Fprintf(w, "\n%s\n", title)
		fmt.Fprintf(tw, "%s\t%9s\t%9s\t%9s\n", what, "SENT", "RECEIVED", "TOTAL")
	}
	row := func(name string, b usage.Bytes) {
		fmt.Fprintf(tw, "%s\t%9s\t%9s\t%9s\n", name, billedBytes(b.Sent), billedBytes(b.Received), billedBytes(b.Total))
	}
	section("By day", "DAY")
	for _, d := range r.Days {
		row(d.Date, d.Bytes)
	}
	section("By team", "TEAM")
	for _, t := range r.Teams {
		name := fmt.Sprintf("(a team you left, %s)", t.Topic)
		if t.ID != "" {
			name = fmt.Sprintf("%s (%s)", printable(t.Name), t.ID[:8])
		}
		row(name, t.Bytes)
	}
	row("not for one team (discovery, upkeep)", r.Unattributed)
	section("By protocol", "PROTOCOL")
	for _, p := range r.Protocols {
		row(p.Protocol, p.Bytes)
	}
	section("Busiest peers", "DEVICE")
	for _, p := range r.Peers {
		row(p.Device, p.Bytes)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nCounts are connection payload bytes; a phone bill adds a few percent for encryption and network headers.")
}

// billedBytes formats a byte count in decimal units (kB = 1000 bytes), as carriers bill them.
func billedBytes(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTP"[exp])
}

// lowDataCmd shows or switches low-data mode.
func lowDataCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "low-data [on|off]",
		Short: "Show or switch low-data mode (send only urgent messages until it is off)",
		Long: `In low-data mode the node sends urgent and emergency messages at once and keeps routine
messages and read receipts, safely stored, until the mode is turned off; it reconciles with other
devices only for teams with an urgent message waiting, or when you run "fieldmesh sync".
The mode stays on across restarts until turned off.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				st  lowdata.Status
				err error
			)
			switch {
			case len(args) == 0:
				st, err = g.client().LowData(cmd.Context())
			case args[0] == "on" || args[0] == "off":
				st, err = g.client().SetLowData(cmd.Context(), args[0] == "on")
			default:
				return fmt.Errorf("low-data: want on or off, not %q", args[0])
			}
			if err != nil {
				return err
			}
			return g.print(st, func(w io.Writer) {
				mode := "off"
				if st.On {
					mode = "on"
				}
				fmt.Fprintf(w, "low-data mode %s\n", mode)
				if st.Queued > 0 {
					fmt.Fprintf(w, "%s waiting to be sent (routine messages and read receipts)\n", plural(st.Queued, "item"))
				}
				if st.UrgentTeams > 0 {
					fmt.Fprintf(w, "%s with an urgent message not yet synced with another device\n", plural(st.UrgentTeams, "team"))
				}
			})
		},
	}
}

// printLowData prints the low-data line of status: the mode, and what waits for it to go off.
func printLowData(w io.Writer, st lowdata.Status) {
	if !st.On {
		if st.Queued > 0 {
			fmt.Fprintf(w, "low-data off, %s still queued (routine messages and read receipts)\n", plural(st.Queued, "item"))
			return
		}
		fmt.Fprintln(w, "low-data off")
		return
	}
	fmt.Fprintf(w, "low-data on, %s queued (routine messages and read receipts wait until it is off)\n", plural(st.Queued, "item"))
}

// syncCmd asks the node to reconcile with every connected member now.
func syncCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "sync",
		Short: "Catch up with the connected devices now (also in low-data mode)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := g.client().SyncNow(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(map[string]int{"synced": n}, func(w io.Writer) {
				fmt.Fprintf(w, "synced %s with the connected devices\n", plural(n, "team session"))
			})
		},
	}
}

// plural returns "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
