package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/duty"
)

// Notification is what the notification hook learns of an alert: the kind of team, a priority and a
// reason. It holds no text, names, team name or id, or patient reference, so what reaches a lock
// screen, a desktop notification daemon or a user's script cannot reveal content.
type Notification struct {
	TeamKind crdt.TeamKind
	Priority crdt.Priority
	Reason   duty.Reason
}

// Summary is the one line to show: "New message in a clinical team", "Urgent message in a clinical
// team (escalated)", "Membership review due in a clinical team".
func (n Notification) Summary() string {
	if n.Reason == duty.ReviewDue {
		return fmt.Sprintf("Membership review due in a %v team", n.TeamKind)
	}
	what := "New message"
	switch n.Priority {
	case crdt.Urgent:
		what = "Urgent message"
	case crdt.Emergency:
		what = "EMERGENCY message"
	}
	s := fmt.Sprintf("%s in a %v team", what, n.TeamKind)
	switch n.Reason {
	case duty.Escalated:
		s += " (escalated to you)"
	case duty.Repeat:
		s += " (not yet acknowledged)"
	case duty.ShiftStart:
		s += " (arrived before your shift)"
	}
	return s
}

// notify hands t's alerts to the hook.
func (n *Node) notify(t *team, alerts []duty.Alert) {
	if n.cfg.Notify == nil || len(alerts) == 0 {
		return
	}
	kind := t.snapshot().Kind
	for _, a := range alerts {
		n.cfg.Notify(Notification{TeamKind: kind, Priority: a.Priority, Reason: a.Reason})
	}
}

// notifyTimeout bounds one run of a notification command.
const notifyTimeout = 30 * time.Second

// CommandNotifier returns a Config.Notify that runs argv (a program and its first arguments, no shell)
// once per notification, in the background, with three more arguments: the summary
// (Notification.Summary), the priority ("routine", "urgent", "emergency") and the reason ("new",
// "shift-start", "escalated", "repeat", "review-due"); the same values are in the environment as
// FIELDMESH_NOTIFY_SUMMARY, FIELDMESH_NOTIFY_PRIORITY and FIELDMESH_NOTIFY_REASON. Its standard input
// is empty and its output is discarded; a run is killed after 30 seconds. Failures are logged (by
// reason, never more) to logger, which may be nil.
func CommandNotifier(argv []string, logger *slog.Logger) (func(Notification), error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("node: empty notification command")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("node: notification command: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fixed := append([]string(nil), argv[1:]...)
	return func(nt Notification) {
		args := append(append([]string(nil), fixed...), nt.Summary(), nt.Priority.String(), nt.Reason.String())
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, path, args...)
			cmd.Env = append(os.Environ(),
				"FIELDMESH_NOTIFY_SUMMARY="+nt.Summary(),
				"FIELDMESH_NOTIFY_PRIORITY="+nt.Priority.String(),
				"FIELDMESH_NOTIFY_REASON="+nt.Reason.String())
			if err := cmd.Run(); err != nil {
				logger.Warn("notification command failed", "err", err)
			}
		}()
	}, nil
}

// DesktopNotifier returns a Config.Notify that shows each notification with notify-send (libnotify),
// urgency low, normal or critical by priority, or an error if notify-send is not installed.
func DesktopNotifier(logger *slog.Logger) (func(Notification), error) {
	path, err := exec.LookPath("notify-send")
	if err != nil {
		return nil, fmt.Errorf("node: desktop notifications need notify-send (libnotify): %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(nt Notification) {
		urgency := "normal"
		switch nt.Priority {
		case crdt.Urgent, crdt.Emergency:
			urgency = "critical"
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
			defer cancel()
			if err := exec.CommandContext(ctx, path, "--app-name=fieldmesh", "--urgency="+urgency, "fieldmesh", nt.Summary()).Run(); err != nil {
				logger.Warn("desktop notification failed", "err", err)
			}
		}()
	}, nil
}

// Notifiers combines notification hooks into one (nil if there are none).
func Notifiers(fs ...func(Notification)) func(Notification) {
	var all []func(Notification)
	for _, f := range fs {
		if f != nil {
			all = append(all, f)
		}
	}
	if len(all) == 0 {
		return nil
	}
	return func(nt Notification) {
		for _, f := range all {
			f(nt)
		}
	}
}

// SplitCommand splits a --notify-cmd value into a program and arguments at spaces (no shell, no
// quoting: put anything more elaborate in a script).
func SplitCommand(s string) []string { return strings.Fields(s) }
