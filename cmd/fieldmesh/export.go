package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fieldmesh/fieldmesh/node/localapi"
)

// export is a subcommand of `fieldmesh record` (record.go): the subject-access export.
func init() { recordSubcommands = append(recordSubcommands, exportCmd) }

// Export file names inside --out.
const (
	exportBundleFile = "bundle.json"
	exportReportFile = "report.html"
)

// exportResult is what `record export --json` prints.
type exportResult struct {
	Bundle   string `json:"bundle"`
	Report   string `json:"report"`
	Messages int    `json:"messages"`
	Teams    int    `json:"teams"`
}

func exportCmd(g *globals) *cobra.Command {
	var patient, member, out string
	c := &cobra.Command{
		Use:   "export (--patient REF | --member NAME) --out DIR",
		Short: "Export everything this device holds about a patient or a member (subject access)",
		Long: `Export everything this device still holds about one subject, for a subject-access or
freedom-of-information request: with --patient, every message whose patient reference is REF
(exactly); with --member, the member's place in each team (admin, devices) and every message they
wrote. Messages whose text was already deleted (filed to the record, or past retention) are not on
the device any more and are not exported.

It writes two files into DIR (created if missing; existing files are never overwritten):
bundle.json, a FHIR R4 Bundle (type collection) of Communication, Practitioner, Group and Patient
resources, and report.html, the same as a page to read or print. They hold the subject's data in
clear: keep them as you would the record. The node records in its audit trail that an export was
made (not of whom); if the audit trail fails verification, no export is made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (patient == "") == (member == "") {
				return errors.New("give one of --patient REF or --member NAME")
			}
			if out == "" {
				return errors.New("give --out DIR: the directory to write bundle.json and report.html into")
			}
			bundle, report := filepath.Join(out, exportBundleFile), filepath.Join(out, exportReportFile)
			for _, p := range []string{bundle, report} {
				if _, err := os.Stat(p); err == nil {
					return fmt.Errorf("%s exists already: choose another --out directory", p)
				}
			}
			e, err := g.client().Export(cmd.Context(), localapi.ExportRequest{Patient: patient, Member: member})
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			if err := writeNew(bundle, indentJSON(e.Bundle)); err != nil {
				return err
			}
			if err := writeNew(report, []byte(e.HTML)); err != nil {
				return err
			}
			res := exportResult{Bundle: bundle, Report: report, Messages: e.Messages, Teams: e.Teams}
			return g.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "Exported %d messages from %d teams:\n  %s (FHIR R4 Bundle)\n  %s (report)\n", e.Messages, e.Teams, bundle, report)
			})
		},
	}
	c.Flags().StringVar(&patient, "patient", "", "the patient reference to export (exactly as written in messages)")
	c.Flags().StringVar(&member, "member", "", "the member to export: a display name, or 8+ hex characters of their id")
	c.Flags().StringVar(&out, "out", "", "directory to write bundle.json and report.html into")
	return c
}

// indentJSON returns b indented for people to read (b itself if it is not JSON).
func indentJSON(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return b
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// writeNew writes a file that must not exist yet, readable only by the user, durably.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
