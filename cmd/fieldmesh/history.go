package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// deviceHistoryCmd is `device history TEAM DEVICE`: ask another device of yours for the team's
// history now. A newly linked device asks by itself after it joins; this resumes or repeats it.
func deviceHistoryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "history TEAM DEVICE",
		Short: "Get the team's earlier messages from another device of yours; DEVICE is its id (8+ hex chars)",
		Long: "A newly linked device gets the messages your other device holds from before the link by itself,\n" +
			"after it first syncs with it. This asks again now, from the device given (both must be yours).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := g.client().FetchHistory(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return g.print(map[string]int{"kept": n}, func(w io.Writer) {
				fmt.Fprintf(w, "history received: %d new entries (messages and their receipts)\n", n)
			})
		},
	}
}
