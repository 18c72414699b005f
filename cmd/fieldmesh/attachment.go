package main

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/node/usage"
	"github.com/fieldmesh/fieldmesh/sync/attach"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

// attachFlag adds --attach FILE (repeatable) to the send command: each file is read when the flag is
// parsed and sent with the message. Images are re-encoded by the node (no EXIF, at most 1600 px).
func attachFlag(fs *pflag.FlagSet, req *localapi.SendRequest) {
	fs.Var(&attachValue{req: req}, "attach", fmt.Sprintf("attach a file (a photo, a PDF, a voice note; up to %d, %d MiB each after photos are scaled down)",
		crdt.MaxAttachments, crdt.MaxAttachmentSize>>20))
}

type attachValue struct {
	req   *localapi.SendRequest
	names []string
}

func (v *attachValue) String() string { return strings.Join(v.names, ",") }
func (v *attachValue) Type() string   { return "FILE" }

func (v *attachValue) Set(path string) error {
	if len(v.req.Attachments) >= crdt.MaxAttachments {
		return fmt.Errorf("at most %d attachments", crdt.MaxAttachments)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, node.MaxAttachmentFile+1))
	if err != nil {
		return err
	}
	if len(data) > node.MaxAttachmentFile {
		return fmt.Errorf("%s is larger than %d MiB", path, node.MaxAttachmentFile>>20)
	}
	if len(data) == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	v.req.Attachments = append(v.req.Attachments, localapi.AttachmentFile{Type: mediaType(path, data), Data: data})
	v.names = append(v.names, path)
	return nil
}

// mediaType names a file's media type from its first bytes, or else from its extension.
func mediaType(path string, data []byte) string {
	t, _, _ := strings.Cut(http.DetectContentType(data), ";")
	if t != "application/octet-stream" && t != "text/plain" {
		return t
	}
	if e, _, _ := strings.Cut(mime.TypeByExtension(strings.ToLower(filepath.Ext(path))), ";"); e != "" {
		return e
	}
	return t
}

func attachmentCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "attachment",
		Short: "List and save message attachments (kept encrypted in the store until you save one)",
	}
	var force bool
	save := &cobra.Command{
		Use:   "save ID FILE",
		Short: "Write an attachment to a file (ID is MESSAGE or MESSAGE/N, as `attachment list` shows)",
		Long: `Write one attachment to FILE, with permissions 0600. Attachments stay in the encrypted store
otherwise: nothing is written to a gallery or a temporary folder. A file that exists is not
overwritten unless --force is given. If the attachment is not all on this device yet, the node asks
the connected devices for the rest; try again once it arrived.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := g.client().OpenAttachment(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			out, err := os.OpenFile(args[1], flags, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists (use --force to overwrite it)", args[1])
			}
			if err != nil {
				return err
			}
			if _, err := out.Write(f.Data); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
			return g.print(map[string]any{"file": args[1], "type": f.Type, "size": len(f.Data)}, func(w io.Writer) {
				fmt.Fprintf(w, "saved %s (%s, %d bytes)\n", args[1], f.Type, len(f.Data))
			})
		},
	}
	save.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists")
	list := &cobra.Command{
		Use:   "list TEAM",
		Short: "List the attachments of a team's messages, and how much of each is on this device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			as, err := g.client().Attachments(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(as, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "ID\tTYPE\tSIZE\tHERE\n")
				for _, a := range as {
					here := fmt.Sprintf("%d/%d chunks", a.Stored, a.Chunks)
					if a.Evicted {
						here += " (evicted for the storage budget; save fetches it again)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", a.Ref, printable(a.Type), a.Size, here)
				}
				tw.Flush()
			})
		},
	}
	c.AddCommand(save, list)
	return c
}

// printAttachmentUsage prints the part of a month's data that attachments took (their own
// protocol's row), if any.
func printAttachmentUsage(w io.Writer, r usage.Report) {
	for _, p := range r.Protocols {
		if p.Protocol == string(node.ChunkProtocol) {
			fmt.Fprintf(w, "Attachments (photos, documents): %s sent, %s received\n", billedBytes(p.Sent), billedBytes(p.Received))
		}
	}
}

// addBudgetFlag adds --attachment-budget MiB to the up command.
func addBudgetFlag(f *pflag.FlagSet, mib *int64) {
	f.Int64Var(mib, "attachment-budget", attach.DefaultBudget>>20,
		"MiB of attachments to keep: past it, those of messages filed to the record or read long ago are evicted (fetched again when opened); 0: no budget")
}

// applyBudget sets cfg's attachment budget from --attachment-budget (MiB; 0: none).
func applyBudget(cfg *node.Config, mib int64) error {
	switch {
	case mib < 0 || mib > 1<<30:
		return fmt.Errorf("--attachment-budget %d: want MiB from 0 (no budget) to %d", mib, int64(1)<<30)
	case mib == 0:
		cfg.AttachmentBudget = -1
	default:
		cfg.AttachmentBudget = mib << 20
	}
	return nil
}

// printAttachmentStorage prints the status line of the attachments' storage.
func printAttachmentStorage(w io.Writer, s localapi.AttachmentStorage) {
	budget := "no budget"
	if s.Budget > 0 {
		budget = fmt.Sprintf("budget %d MiB", s.Budget>>20)
	}
	fmt.Fprintf(w, "attachments  %s in %d chunks (%s), %d evicted (fetched again when opened)\n", billedBytes(uint64(max(s.Bytes, 0))), s.Chunks, budget, s.Evicted)
}
