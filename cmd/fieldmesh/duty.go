package main

// Clinical-safety commands: duty hours, the on-call rota, membership review, the daemon's notification
// hook, and the checks made before a message is sent (the team's kind and size, raw identifiers).

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fieldmesh/fieldmesh/node"
	"github.com/fieldmesh/fieldmesh/node/localapi"
	"github.com/fieldmesh/fieldmesh/sync/crdt"
)

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// parseDays reads "mon", "mon-fri", "sat,sun", "fri-mon" or "daily" into weekdays (0 Sunday).
func parseDays(s string) ([]uint8, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "daily" || s == "every" {
		return []uint8{0, 1, 2, 3, 4, 5, 6}, nil
	}
	day := func(d string) (uint8, error) {
		d = strings.TrimSpace(d)
		for i, n := range dayNames {
			if len(d) >= 3 && strings.HasPrefix(n, d[:3]) {
				return uint8(i), nil
			}
		}
		return 0, fmt.Errorf("unknown day %q (want mon, tue, ... sun, a range such as mon-fri, or daily)", d)
	}
	var out []uint8
	for _, part := range strings.Split(s, ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, err := day(from)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = day(to); err != nil {
				return nil, err
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
			if d == b {
				break
			}
		}
	}
	return out, nil
}

// parseClock reads "HH:MM" (24:00 allowed as an end) into minutes after midnight.
func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("bad time %q (want HH:MM, 24-hour)", s)
	}
	return hh*60 + mm, nil
}

// parseShifts reads "DAYS@HH:MM-HH:MM" (an end at or before the start runs past midnight) into one
// shift per day.
func parseShifts(spec string) ([]crdt.Shift, error) {
	days, hours, ok := strings.Cut(spec, "@")
	from, to, ok2 := strings.Cut(hours, "-")
	if !ok || !ok2 {
		return nil, fmt.Errorf("bad shift %q (want DAYS@HH:MM-HH:MM, such as mon-fri@08:00-16:00)", spec)
	}
	ds, err := parseDays(days)
	if err != nil {
		return nil, err
	}
	a, err := parseClock(from)
	if err != nil {
		return nil, err
	}
	b, err := parseClock(to)
	if err != nil {
		return nil, err
	}
	if a == crdt.MinutesPerDay {
		return nil, fmt.Errorf("bad shift %q: it cannot start at 24:00", spec)
	}
	length := (b - a + crdt.MinutesPerDay) % crdt.MinutesPerDay
	if length == 0 {
		length = crdt.MinutesPerDay
	}
	var out []crdt.Shift
	for _, d := range ds {
		out = append(out, crdt.Shift{Day: d, Start: uint16(a), Length: uint16(length)})
	}
	return out, nil
}

// cmpShift orders shifts as the duty and rota ops require: by day, start, then length.
func cmpShift(a, b crdt.Shift) int {
	return cmp.Or(cmp.Compare(a.Day, b.Day), cmp.Compare(a.Start, b.Start), cmp.Compare(a.Length, b.Length))
}

func sortShifts(ss []crdt.Shift) []crdt.Shift {
	slices.SortFunc(ss, cmpShift)
	return slices.Compact(ss)
}

// parseOffset reads a UTC offset: "local" (this machine's, now), "UTC", "+01:00", "-0530", "+2".
func parseOffset(s string) (int16, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "local", "":
		_, off := time.Now().Zone()
		return int16(off / 60), nil
	case "utc", "z":
		return 0, nil
	}
	sign := 1
	switch s[0] {
	case '+':
	case '-':
		sign = -1
	default:
		return 0, fmt.Errorf("bad UTC offset %q (want local, UTC or ±HH:MM)", s)
	}
	rest := strings.ReplaceAll(s[1:], ":", "")
	var h, m int
	var err error
	switch len(rest) {
	case 1, 2:
		h, err = strconv.Atoi(rest)
	case 4:
		h, err = strconv.Atoi(rest[:2])
		if err == nil {
			m, err = strconv.Atoi(rest[2:])
		}
	default:
		err = fmt.Errorf("length")
	}
	if err != nil || h > 14 || m > 59 {
		return 0, fmt.Errorf("bad UTC offset %q (want local, UTC or ±HH:MM)", s)
	}
	return int16(sign * (h*60 + m)), nil
}

// parseZone reads the --zone and --utc-offset flags: with a zone (an IANA name such as
// Africa/Blantyre, whose daylight saving the devices follow), the offset sent beside it is the zone's
// offset now (for a device that does not know the zone); without one, the fixed offset.
func parseZone(zone, offset string, offsetSet bool) (string, int16, error) {
	zone = strings.TrimSpace(zone)
	if zone == "" {
		off, err := parseOffset(offset)
		return "", off, err
	}
	if offsetSet {
		return "", 0, fmt.Errorf("give --zone or --utc-offset, not both")
	}
	if err := crdt.CheckZone(zone); err != nil {
		return "", 0, fmt.Errorf("bad time zone %q (want an IANA name such as Africa/Blantyre or Europe/London)", zone)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return "", 0, fmt.Errorf("unknown time zone %q (want an IANA name such as Africa/Blantyre or Europe/London)", zone)
	}
	_, off := time.Now().In(loc).Zone()
	return zone, int16(off / 60), nil
}

// fmtZone names a zone, or its fixed offset.
func fmtZone(zone string, off int16) string {
	if zone != "" {
		return zone
	}
	return fmtOffset(off)
}

func fmtShift(s crdt.Shift) string {
	end := (int(s.Start) + int(s.Length)) % crdt.MinutesPerDay
	out := fmt.Sprintf("%s %02d:%02d-%02d:%02d", dayNames[s.Day%7], s.Start/60, s.Start%60, end/60, end%60)
	if int(s.Start)+int(s.Length) > crdt.MinutesPerDay {
		out += " (next day)"
	}
	return out
}

func fmtOffset(m int16) string {
	sign := "+"
	if m < 0 {
		sign, m = "-", -m
	}
	return fmt.Sprintf("UTC%s%02d:%02d", sign, m/60, m%60)
}

func dutyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "duty", Short: "Your duty hours in a team (routine messages wait for your shift)"}
	var shifts []string
	var offset, zone string
	set := &cobra.Command{
		Use:   "set TEAM --shift DAYS@HH:MM-HH:MM ...",
		Short: "Publish your weekly duty hours (replaces the previous ones)",
		Long: `Publish your weekly duty hours to the team. Outside them, routine messages arrive silently and
you are notified at the start of your next shift; urgent messages for you as the person on call and
emergency messages notify you whatever your hours. A shift such as mon-fri@08:00-16:00 or
sat,sun@20:00-08:00 (ending the next morning); times are in --zone, an IANA time zone such as
Africa/Blantyre whose daylight saving is followed, or at --utc-offset (default: this machine's now).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(shifts) == 0 {
				return fmt.Errorf("give at least one --shift (or use: fieldmesh duty off %s)", args[0])
			}
			z, off, err := parseZone(zone, offset, cmd.Flags().Changed("utc-offset"))
			if err != nil {
				return err
			}
			return setDuty(cmd.Context(), g, args[0], z, off, shifts)
		},
	}
	set.Flags().StringArrayVar(&shifts, "shift", nil, "a shift, DAYS@HH:MM-HH:MM (repeatable)")
	set.Flags().StringVar(&offset, "utc-offset", "local", "the shifts' time zone as a fixed offset: local, UTC or ±HH:MM")
	set.Flags().StringVar(&zone, "zone", "", "the shifts' IANA time zone, such as Africa/Blantyre (daylight saving followed)")
	off := &cobra.Command{
		Use:   "off TEAM",
		Short: "Go off duty until you publish hours again (urgent and emergency messages still reach you)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setDuty(cmd.Context(), g, args[0], "", 0, nil)
		},
	}
	show := &cobra.Command{
		Use:   "show TEAM",
		Short: "Show the team's duty hours and on-call rota",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := g.client().Duty(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(rep, func(w io.Writer) { printDuty(w, rep) })
		},
	}
	c.AddCommand(set, off, show)
	return c
}

func setDuty(ctx context.Context, g *globals, team, zone string, off int16, specs []string) error {
	var all []crdt.Shift
	for _, s := range specs {
		ss, err := parseShifts(s)
		if err != nil {
			return err
		}
		all = append(all, ss...)
	}
	all = sortShifts(all)
	if err := g.client().SetDuty(ctx, localapi.DutyRequest{Team: team, Zone: zone, Offset: off, Shifts: all}); err != nil {
		return err
	}
	return g.print(struct {
		Shifts int `json:"shifts"`
	}{len(all)}, func(w io.Writer) {
		if len(all) == 0 {
			fmt.Fprintln(w, "you are off duty in this team until you publish hours again")
			return
		}
		fmt.Fprintf(w, "published %s (%s)\n", plural(len(all), "shift"), fmtZone(zone, off))
	})
}

func printDuty(w io.Writer, rep node.DutyReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tNOW\tHOURS")
	for _, p := range rep.Persons {
		now := "on duty"
		if !p.OnDuty {
			now = "off duty"
		}
		hours := "none published (always notified)"
		if p.Published {
			var hs []string
			for _, s := range p.Shifts {
				hs = append(hs, fmtShift(s))
			}
			hours = strings.Join(hs, ", ") + " " + fmtZone(p.Zone, p.Offset)
			if len(p.Shifts) == 0 {
				hours = "off duty"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", printable(p.Name), now, hours)
	}
	tw.Flush()
	if rep.Rota == nil {
		fmt.Fprintln(w, "no on-call rota: urgent messages notify everyone")
		return
	}
	r := rep.Rota
	fmt.Fprintf(w, "on-call rota (%s): escalates after %d min, emergencies repeat every %d min\n", fmtZone(r.Zone, r.Offset), r.EscalateAfter, r.RenotifyEvery)
	for _, sl := range r.Slots {
		fmt.Fprintf(w, "  %s: %s\n", fmtShift(sl.Shift), printable(strings.Join(sl.OnCall, " then ")))
	}
	if len(r.OnCallNow) > 0 {
		fmt.Fprintf(w, "on call now: %s\n", printable(strings.Join(r.OnCallNow, " then ")))
	}
}

func rotaCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "rota", Short: "The team's on-call rota (admins): who urgent messages go to, in order"}
	var (
		slots            []string
		offset, zone     string
		escalate, repeat time.Duration
	)
	set := &cobra.Command{
		Use:   "set TEAM --slot DAYS@HH:MM-HH:MM=NAME,NAME ...",
		Short: "Publish the on-call rota (replaces the previous one)",
		Long: `Publish the team's on-call rota. An urgent message notifies the first person on call when it was
sent; if nobody notified has read it after --escalate, the next one is notified, and after the last,
everyone. An emergency message notifies everyone and repeats every --repeat until someone reads it.
A slot names its days and hours and the persons on call in order, such as
mon-fri@08:00-20:00=Chi,Dee; members are names or ids as in: fieldmesh team members TEAM.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			z, off, err := parseZone(zone, offset, cmd.Flags().Changed("utc-offset"))
			if err != nil {
				return err
			}
			var refs []node.RotaSlotRef
			seen := map[crdt.Shift]bool{}
			for _, s := range slots {
				when, who, ok := strings.Cut(s, "=")
				if !ok || strings.TrimSpace(who) == "" {
					return fmt.Errorf("bad slot %q (want DAYS@HH:MM-HH:MM=NAME,NAME)", s)
				}
				ss, err := parseShifts(when)
				if err != nil {
					return err
				}
				var names []string
				for _, n := range strings.Split(who, ",") {
					names = append(names, strings.TrimSpace(n))
				}
				for _, sh := range ss {
					if seen[sh] {
						return fmt.Errorf("two slots for %s", fmtShift(sh))
					}
					seen[sh] = true
					refs = append(refs, node.RotaSlotRef{Shift: sh, OnCall: names})
				}
			}
			slices.SortFunc(refs, func(a, b node.RotaSlotRef) int { return cmpShift(a.Shift, b.Shift) })
			req := localapi.RotaRequest{Team: args[0], Zone: z, Offset: off, EscalateAfter: escalate.String(), RenotifyEvery: repeat.String(), Slots: refs}
			if err := g.client().SetRota(cmd.Context(), req); err != nil {
				return err
			}
			return g.print(struct {
				Slots int `json:"slots"`
			}{len(refs)}, func(w io.Writer) {
				fmt.Fprintf(w, "published an on-call rota of %s (%s)\n", plural(len(refs), "slot"), fmtZone(z, off))
			})
		},
	}
	f := set.Flags()
	f.StringArrayVar(&slots, "slot", nil, "DAYS@HH:MM-HH:MM=NAME,NAME (repeatable; none: no rota, urgent messages notify everyone)")
	f.StringVar(&offset, "utc-offset", "local", "the slots' time zone as a fixed offset: local, UTC or ±HH:MM")
	f.StringVar(&zone, "zone", "", "the slots' IANA time zone, such as Africa/Blantyre (daylight saving followed)")
	f.DurationVar(&escalate, "escalate", 10*time.Minute, "escalate an unread urgent message to the next person on call after this long")
	f.DurationVar(&repeat, "repeat", 5*time.Minute, "notify again of an unread emergency message this often")
	c.AddCommand(set)
	return c
}

func teamReviewCmd(g *globals) *cobra.Command {
	var done bool
	c := &cobra.Command{
		Use:   "review TEAM",
		Short: "Review the team's membership: members, devices, last seen (admins record it with --done)",
		Long: `List the team's members and their devices with when each was last seen in the team, and when
the membership was last reviewed. Remove leavers (fieldmesh team remove) and lost devices (fieldmesh device
remove), then record the review with --done: it is an op in the team's log, so every admin's next
reminder (every 30 days by default) counts from it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rep node.ReviewReport
			var err error
			if done {
				rep, err = g.client().RecordReview(cmd.Context(), args[0])
			} else {
				rep, err = g.client().Review(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			return g.print(rep, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "MEMBER\tROLE\tDEVICE\tLAST SEEN")
				for _, m := range rep.Members {
					role := "member"
					if m.Admin {
						role = "admin"
					}
					for i, d := range m.Devices {
						name := printable(m.Name)
						if i > 0 {
							name, role = "", ""
						}
						seen := "never"
						if !d.LastSeen.IsZero() {
							seen = d.LastSeen.Local().Format("2006-01-02 15:04")
						}
						fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\n", name, role, d.ID.Short(), printable(d.Label), seen)
					}
				}
				tw.Flush()
				if rep.LastReview.IsZero() {
					fmt.Fprintln(w, "never reviewed")
				} else {
					fmt.Fprintf(w, "last reviewed %s\n", rep.LastReview.Local().Format("2006-01-02 15:04"))
				}
				if !rep.Due.IsZero() {
					fmt.Fprintf(w, "next review due %s\n", rep.Due.Local().Format("2006-01-02"))
				}
				if done {
					fmt.Fprintln(w, "review recorded")
				}
			})
		},
	}
	c.Flags().BoolVar(&done, "done", false, "record that you reviewed the membership (admins)")
	return c
}

// notifyOpts are the daemon's notification flags.
type notifyOpts struct {
	cmd     string
	desktop bool
	review  time.Duration
}

func addNotifyFlags(f *pflag.FlagSet) *notifyOpts {
	o := &notifyOpts{}
	f.StringVar(&o.cmd, "notify-cmd", envOr("FIELDMESH_NOTIFY_CMD", ""), "run this program (no shell) for each notification; it gets the summary, priority and reason as arguments, never content (env FIELDMESH_NOTIFY_CMD)")
	f.BoolVar(&o.desktop, "notify-desktop", false, "show notifications on the desktop with notify-send (content-free)")
	f.DurationVar(&o.review, "review-every", 30*24*time.Hour, "remind admins to review a team's membership this long after the last review (0 never)")
	return o
}

// apply sets the node's notification hook and review interval.
func (o *notifyOpts) apply(cfg *node.Config, logger *slog.Logger) error {
	var hooks []func(node.Notification)
	if o.cmd != "" {
		h, err := node.CommandNotifier(node.SplitCommand(o.cmd), logger)
		if err != nil {
			return fmt.Errorf("--notify-cmd: %w", err)
		}
		hooks = append(hooks, h)
	}
	if o.desktop {
		h, err := node.DesktopNotifier(logger)
		if err != nil {
			return fmt.Errorf("--notify-desktop: %w", err)
		}
		hooks = append(hooks, h)
	}
	cfg.Notify = node.Notifiers(hooks...)
	cfg.ReviewEvery = o.review
	if o.review == 0 {
		cfg.ReviewEvery = -1
	}
	return nil
}

// preSend checks a message before it is sent: a patient reference in a social team is refused (the
// node refuses it too); text that looks like a raw patient identifier is refused by the node's API
// unless allowIDs. It returns the team, for the line that reports the send.
func preSend(ctx context.Context, g *globals, req *localapi.SendRequest, allowIDs bool) (localapi.Team, error) {
	ts, err := g.client().Teams(ctx)
	if err != nil {
		return localapi.Team{}, err
	}
	t, err := findTeam(ts, req.Team)
	if err != nil {
		t = localapi.Team{} // the node answers the send with its own error
	}
	if t.Kind == crdt.Social.String() && strings.TrimSpace(req.Patient) != "" {
		return t, fmt.Errorf("%q is a social team: patient references are not allowed there; send it to a clinical team", printable(t.Name))
	}
	req.AllowIdentifiers = allowIDs // the node's API refuses raw identifiers otherwise
	return t, nil
}

// sentLine is what send prints: the message's short id, and the team's kind and size, so a message
// that went to the wrong group shows at once.
func sentLine(id string, t localapi.Team) string {
	if t.ID == "" {
		return "sent " + id
	}
	return fmt.Sprintf("sent %s to %s team %q (%s)", id, t.Kind, printable(t.Name), plural(t.Members, "member"))
}
