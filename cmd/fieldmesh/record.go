package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/sync/record"
)

// recordSubcommands are the subcommands of `fieldmesh record`, in the order they are listed. A file
// that adds one registers it with one line:
//
//	func init() { recordSubcommands = append(recordSubcommands, recordExportCmd) }
var recordSubcommands = []func(*globals) *cobra.Command{recordSyncCmd}

// recordCmd is `fieldmesh record`, the health record: its subcommands are recordSubcommands.
func recordCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "record", Short: "The health record: file clinical messages to it (FHIR R4), export what this device holds about a subject"}
	for _, sub := range recordSubcommands {
		c.AddCommand(sub(g))
	}
	return c
}

// maxSecretFile bounds a credentials or CA file.
const maxSecretFile = 1 << 20

// readSmallFile reads a file of at most limit bytes; what names it in errors.
func readSmallFile(path, what string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, errors.Unwrap(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", what, limit)
	}
	return b, nil
}

func recordSyncCmd(g *globals) *cobra.Command {
	var fhir, tokenFile, basicFile, caFile, profile, patientsFile string
	var watch bool
	var maxBundleKiB int
	c := &cobra.Command{
		Use:   "sync --fhir URL",
		Short: "File the clinical teams' messages due for the record to a FHIR R4 server (run on an admin's device, usually the clinic box)",
		Long: `Files every message of this device's clinical teams that carries a patient reference, or that
its author marked for the record (send --for-record), and is not filed yet, to a FHIR R4 server: one
transaction Bundle per message (profile "communication": a Communication and its Provenance;
"observation": an Observation note and its Provenance). A message's attachments are filed with it
(communication: payload.contentAttachment; observation: a Media for a photo, a DocumentReference for
another file), once this device holds all of them, checked; it asks its peers for missing ones and
the message waits meanwhile. A Bundle over --max-bundle is not posted and is held. What the server
confirms is published to the team as filed, and every device deletes the message's body and
attachments a grace period (24 h) later.

Patient references are resolved with the server's Patient?identifier=TOKEN, or by a mapping table
(--patients FILE: one "TOKEN Patient/id" line per token). A token that matches no patient is held
and reported, not filed. The queue lives in the node's encrypted store: what fails is retried with
backoff, across restarts. With --watch the command keeps filing until interrupted, and waits for
the node when it is not running (a restart of the clinic box).

Credentials are read from a file (--token-file: a bearer token; --basic-file: "user:password"),
never from the command line, and are not stored.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fhir == "" {
				return errors.New("--fhir URL is required")
			}
			if maxBundleKiB < 1 || maxBundleKiB > record.MaxBundle>>10 {
				return fmt.Errorf("--max-bundle: 1 to %d KiB", record.MaxBundle>>10)
			}
			req := localapi.RecordSyncRequest{FHIR: fhir, Profile: profile, Watch: watch, MaxBundle: maxBundleKiB << 10}
			if _, err := record.ProfileByName(profile); err != nil {
				return errors.New(strings.TrimPrefix(err.Error(), "record: "))
			}
			switch {
			case tokenFile != "" && basicFile != "":
				return errors.New("give --token-file or --basic-file, not both")
			case tokenFile != "":
				b, err := readSmallFile(tokenFile, "token file", maxSecretFile)
				if err != nil {
					return err
				}
				tok := strings.TrimSpace(string(b))
				if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
					return errors.New("the token file must hold one token on one line")
				}
				req.Authorization = "Bearer " + tok
			case basicFile != "":
				b, err := readSmallFile(basicFile, "basic credentials file", maxSecretFile)
				if err != nil {
					return err
				}
				up := strings.TrimSpace(string(b))
				if !strings.Contains(up, ":") || strings.ContainsAny(up, "\r\n") {
					return errors.New(`the basic credentials file must hold "user:password" on one line`)
				}
				req.Authorization = "Basic " + base64.StdEncoding.EncodeToString([]byte(up))
			}
			if caFile != "" {
				b, err := readSmallFile(caFile, "CA file", maxSecretFile)
				if err != nil {
					return err
				}
				req.CA = string(b)
			}
			if patientsFile != "" {
				b, err := readSmallFile(patientsFile, "patient table", record.MaxPatientTable)
				if err != nil {
					return err
				}
				if _, err := record.ParsePatientTable(b); err != nil {
					return errors.New(strings.TrimPrefix(err.Error(), "record: "))
				}
				req.Patients = string(b)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return recordSync(ctx, g, req)
		},
	}
	f := c.Flags()
	f.StringVar(&fhir, "fhir", "", "the FHIR R4 server's base URL (http or https)")
	f.StringVar(&tokenFile, "token-file", "", "file holding a bearer token")
	f.StringVar(&basicFile, "basic-file", "", `file holding "user:password" for HTTP basic authentication`)
	f.StringVar(&caFile, "ca", "", "PEM file of the CAs to trust for an https server (default: the system's)")
	f.StringVar(&profile, "profile", record.DefaultProfile, "mapping profile: communication or observation")
	f.StringVar(&patientsFile, "patients", "", `patient mapping table: one "TOKEN Patient/id" line per token`)
	f.IntVar(&maxBundleKiB, "max-bundle", record.MaxBundle>>10, "largest Bundle to post, in KiB: the record server's request limit, if lower (a message with larger attachments is held)")
	f.BoolVar(&watch, "watch", false, "keep filing until interrupted; wait for the node when it is not running")
	return c
}

// recordSync runs the sync, printing each report; with --watch it reconnects when the node goes
// away (once a second) until ctx ends.
func recordSync(ctx context.Context, g *globals, req localapi.RecordSyncRequest) error {
	failed := false
	print := func(rep localapi.RecordReport) error {
		if rep.Error != "" {
			failed = true
		}
		return g.print(rep, func(w io.Writer) { io.WriteString(w, recordReportText(rep)) })
	}
	for {
		err := g.client().RecordSync(ctx, req, print)
		if ctx.Err() != nil {
			return nil
		}
		if !req.Watch {
			if err == nil && failed {
				return errors.New("the record sync stopped on an error (above)")
			}
			return err
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "record sync: %v; trying again\n", err)
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// recordReportText is the human form of a report.
func recordReportText(rep localapi.RecordReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "filed %d; %d waiting", rep.Filed, rep.Queued)
	if rep.Stopped != "" {
		fmt.Fprintf(&b, "; stopped: %s", rep.Stopped)
	}
	if rep.Next != "" {
		if t, err := time.Parse(time.RFC3339, rep.Next); err == nil {
			fmt.Fprintf(&b, "; next try %s", t.Local().Format("2006-01-02 15:04:05"))
		}
	}
	b.WriteString("\n")
	for _, h := range rep.Waiting {
		status := ""
		if h.Status != 0 {
			status = fmt.Sprintf(" (HTTP %d)", h.Status)
		}
		fmt.Fprintf(&b, "  team %s message %s: %s%s, %d attempts\n", h.Team, h.Message, h.Outcome, status, h.Attempts)
	}
	for _, t := range rep.NotAdmin {
		fmt.Fprintf(&b, "  team %s: this device is not an admin's, so its filings would not count; nothing filed\n", t)
	}
	for t, n := range rep.Unfiled {
		fmt.Fprintf(&b, "  warning: team %s has %d clinical messages unfiled past the retention warning\n", t, n)
	}
	if rep.Error != "" {
		fmt.Fprintf(&b, "  error: %s\n", rep.Error)
	}
	return b.String()
}
