package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// auditCmd checks and exports the device's audit trail (node/audit).
func auditCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Check or export this device's audit trail",
		Long: `This device's audit trail records security-relevant events — membership changes, key
epochs, filings to the record, deletions, subject-access exports, wipes, relay admissions — with no
message content: kinds, times, counts and short ids only. Each record is chained to the one before
under a key kept in the encrypted store, which also anchors the newest record.`,
		Args: cobra.NoArgs,
	}
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check that the audit trail is whole and unaltered (exit status 1 if not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := g.client().AuditVerify(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if err := g.print(v, nil); err != nil {
					return err
				}
			}
			if !v.OK {
				return errors.New(v.Error)
			}
			if !g.json {
				fmt.Printf("audit trail intact: %d records\n", v.Records)
			}
			return nil
		},
	}
	var out string
	export := &cobra.Command{
		Use:   "export [--out FILE]",
		Short: "Write the audit trail as FHIR R4 AuditEvents (a Bundle, JSON)",
		Long: `Write the audit trail as a FHIR R4 Bundle (type collection) of AuditEvent resources, to
standard output or --out FILE (which must not exist). The export is itself recorded in the trail. A
trail that fails verification is not exported: run fieldmesh audit verify.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out != "" {
				if _, err := os.Stat(out); err == nil {
					return fmt.Errorf("%s exists already: choose another --out file", out)
				}
			}
			b, err := g.client().AuditExport(cmd.Context())
			if err != nil {
				return err
			}
			b = indentJSON(b)
			if out == "" {
				_, err = os.Stdout.Write(b)
				return err
			}
			if err := writeNew(out, b); err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(os.Stderr, "Wrote the audit trail to %s\n", out)
			}
			return nil
		},
	}
	export.Flags().StringVar(&out, "out", "", "file to write the Bundle to (default: standard output)")
	restart := &cobra.Command{
		Use:   "restart",
		Short: "Start a new audit trail in place of one that fails verification (the old file is kept)",
		Long: `Start a new audit trail in place of one that fails verification, so the device records events
again. The old file is kept beside it (audit.log.broken-TIME) as evidence, and the new trail's first
record says it was restarted and how many records the old one held. An intact trail is not
restarted. Look into why the old one failed before you restart it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kept, err := g.client().AuditRestart(cmd.Context())
			if err != nil {
				return err
			}
			return g.print(map[string]string{"kept": kept}, func(w io.Writer) {
				if kept != "" {
					fmt.Fprintf(w, "Started a new audit trail; the old one is kept at %s\n", kept)
				} else {
					fmt.Fprintln(w, "Started a new audit trail (the old file was missing)")
				}
			})
		},
	}
	c.AddCommand(verify, export, restart)
	return c
}
