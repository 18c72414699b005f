package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldmesh/fieldmesh/sync/crdt"
	"github.com/fieldmesh/fieldmesh/sync/duty"
)

// alertLog records the notifications one node raised, with the (virtual) time of each.
type alertLog struct {
	mu  stdsync.Mutex
	got []timedAlert
}

type timedAlert struct {
	at time.Time
	Notification
}

func (l *alertLog) notify(n Notification) {
	l.mu.Lock()
	l.got = append(l.got, timedAlert{time.Now(), n})
	l.mu.Unlock()
}

// since returns the alerts of the given priority, as minutes after t0 and reason.
func (l *alertLog) since(t0 time.Time, p crdt.Priority) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, a := range l.got {
		if a.Priority == p && a.Reason != duty.ReviewDue {
			out = append(out, fmt.Sprintf("%d %v", int(a.at.Sub(t0)/time.Minute), a.Reason))
		}
	}
	return out
}

// wholeWeek is a rota slot for every day, all day.
func wholeWeek(onCall ...string) []RotaSlotRef {
	var out []RotaSlotRef
	for d := range 7 {
		out = append(out, RotaSlotRef{Shift: crdt.Shift{Day: uint8(d), Start: 0, Length: 24 * 60}, OnCall: onCall})
	}
	return out
}

// TestDutyAndEscalationPartitioned drives four nodes in virtual time. Bea is off duty for two hours;
// the rota puts Chi then Dee on call. Admin sends a routine, an urgent and an emergency message, then
// every link is cut, so each device decides alone from its replica:
//   - the routine message alerts Chi and Dee (no duty hours published) at once, and Bea only at the
//     start of her shift;
//   - the urgent message alerts Chi at once, escalates to Dee after the 10-minute timeout and to
//     everyone (Bea) after 20, as nobody on call reads it;
//   - the emergency message alerts everyone at once, off duty or not, and again every 3 minutes; Chi
//     reads it at minute 5 and stops; Bea keeps being alerted until Chi's acknowledgement reaches her
//     when her link to Chi is restored; Dee, still cut off, goes on.
func TestDutyAndEscalationPartitioned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		names := []string{"Admin", "Bea", "Chi", "Dee"}
		logs := make([]*alertLog, len(names))
		mn, ns := newMockNodesCfg(t, func(i int, c *Config) {
			logs[i] = &alertLog{}
			c.Notify = logs[i].notify
			c.AckInterval = -1 // acknowledgements only when the test flushes them
			c.ReviewEvery = -1
		}, names...)
		admin, bea, chi, dee := ns[0], ns[1], ns[2], ns[3]
		team, err := admin.CreateTeam("Night ward", crdt.Clinical)
		if err != nil {
			t.Fatal(err)
		}
		ref := team.ID.String()
		joinAll(t, admin, ref, bea, chi, dee)

		// Bea's shift starts in two hours (to the minute) and lasts one.
		start := time.Now().UTC().Add(2 * time.Hour).Truncate(time.Minute)
		shift := crdt.Shift{Day: uint8(start.Weekday()), Start: uint16(start.Hour()*60 + start.Minute()), Length: 60}
		if err := bea.SetDuty(ref, crdt.Duty{Shifts: []crdt.Shift{shift}}); err != nil {
			t.Fatal(err)
		}
		if err := admin.SetRota(ref, "", 0, 10*time.Minute, 3*time.Minute, wholeWeek("Chi", "Dee")); err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			waitState(t, n, ref, func(s *crdt.State) bool { return s.Rota != nil && len(s.Duty) == 1 && len(s.Persons) == 4 })
		}
		// Bea, a plain member, may not publish a rota.
		if err := bea.SetRota(ref, "", 0, time.Minute, time.Minute, wholeWeek("Bea")); err == nil {
			t.Error("a member who is not an admin published a rota")
		}

		// Each message's alerts are timed from its own send time (its HLC time, which is the virtual
		// clock's): a device raises an alert at its first tick (every minute) at or after it is due, so
		// an alert k minutes after a message shows as minute k. The test's own steps are placed half
		// way between ticks' windows, so no step races an alert.
		sent := map[crdt.Priority]time.Time{}
		var emergency crdt.OpID
		for _, p := range []crdt.Priority{crdt.Routine, crdt.Urgent, crdt.Emergency} {
			id, at, err := admin.Send(ref, crdt.Message{Text: "bed 4 " + p.String(), Priority: p})
			if err != nil {
				t.Fatal(err)
			}
			sent[p] = at.Time()
			emergency = id
		}
		for _, n := range ns[1:] {
			waitMessages(t, n, ref, 3)
		}
		for i := range ns {
			cutOff(mn, ns[i], ns[i+1:]...)
		}
		sleepUntil := func(at time.Time) {
			time.Sleep(time.Until(at))
			synctest.Wait()
		}
		tE := sent[crdt.Emergency]
		// Chi reads the emergency message after its repeat of minute 3 and before that of minute 6.
		sleepUntil(tE.Add(5*time.Minute + 30*time.Second))
		if err := chi.MarkRead(ref, []crdt.OpID{emergency}); err != nil {
			t.Fatal(err)
		}
		if _, err := chi.FlushAcks(); err != nil {
			t.Fatal(err)
		}
		// Heal Bea and Chi only, after Bea's repeat of minute 15 and before that of minute 18: Chi's
		// acknowledgement reaches Bea.
		sleepUntil(tE.Add(17 * time.Minute))
		bringInReach(t, mn, bea, chi)
		waitState(t, bea, ref, func(s *crdt.State) bool {
			for _, m := range s.Messages {
				if m.ID == emergency {
					return len(m.ReadBy) > 0
				}
			}
			return false
		})
		if late := time.Since(tE); late >= 18*time.Minute {
			t.Fatalf("Chi's acknowledgement reached Bea %v after the message; want before minute 18", late)
		}
		// Until Dee's repeat of minute 150 has been raised.
		sleepUntil(tE.Add(150*time.Minute + 59*time.Second))

		lg := map[string]*alertLog{"Admin": logs[0], "Bea": logs[1], "Chi": logs[2], "Dee": logs[3]}
		check := func(who string, p crdt.Priority, want []string) {
			t.Helper()
			if got := lg[who].since(sent[p], p); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s, %v: alerts (minute reason) %q; want %q", who, p, got, want)
			}
		}
		check("Admin", crdt.Routine, nil)
		check("Admin", crdt.Urgent, nil)
		check("Admin", crdt.Emergency, nil)
		// Bea's routine alert comes at her shift's start: at the first tick from then on.
		lg["Bea"].mu.Lock()
		var shiftAlerts []time.Time
		for _, a := range lg["Bea"].got {
			if a.Priority == crdt.Routine {
				shiftAlerts = append(shiftAlerts, a.at)
				if a.Reason != duty.ShiftStart {
					t.Errorf("Bea, routine: an alert for %v; want only shift-start", a.Reason)
				}
			}
		}
		lg["Bea"].mu.Unlock()
		if len(shiftAlerts) != 1 || shiftAlerts[0].Before(start) || !shiftAlerts[0].Before(start.Add(time.Minute)) {
			t.Errorf("Bea, routine: alerts at %v; want one in the minute from her shift's start, %v", shiftAlerts, start)
		}
		check("Chi", crdt.Routine, []string{"0 new"})
		check("Dee", crdt.Routine, []string{"0 new"})

		check("Chi", crdt.Urgent, []string{"0 new"})
		check("Dee", crdt.Urgent, []string{"10 escalated"})
		check("Bea", crdt.Urgent, []string{"20 escalated"})

		check("Chi", crdt.Emergency, []string{"0 new", "3 repeat"})
		check("Bea", crdt.Emergency, []string{"0 new", "3 repeat", "6 repeat", "9 repeat", "12 repeat", "15 repeat"})
		dee3 := []string{"0 new"}
		for m := 3; m <= 150; m += 3 {
			dee3 = append(dee3, fmt.Sprintf("%d repeat", m))
		}
		check("Dee", crdt.Emergency, dee3)
		for _, n := range ns {
			n.Close()
		}
	})
}

// TestReviewReminderAndRecord: an admin is reminded when the review is due (never a plain member),
// the report lists members, devices and last-seen times, and recording a review calls the audit hook
// and moves the next reminder on.
func TestReviewReminderAndRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := []*alertLog{{}, {}}
		type reviewed struct {
			team crdt.TeamID
			op   crdt.OpID
		}
		var audit []reviewed
		_, ns := newMockNodesCfg(t, func(i int, c *Config) {
			c.Notify = logs[i].notify
			c.ReviewEvery = 24 * time.Hour
			c.OnReview = func(team crdt.TeamID, op crdt.OpID, _ time.Time) { audit = append(audit, reviewed{team, op}) }
		}, "Admin", "Bea")
		admin, bea := ns[0], ns[1]
		team, err := admin.CreateTeam("Clinic", crdt.Clinical)
		if err != nil {
			t.Fatal(err)
		}
		ref := team.ID.String()
		joinAll(t, admin, ref, bea)
		if _, _, err := bea.Send(ref, crdt.Message{Text: "hello"}); err != nil {
			t.Fatal(err)
		}
		waitMessages(t, admin, ref, 1)

		reviewsDue := func(l *alertLog) int {
			l.mu.Lock()
			defer l.mu.Unlock()
			n := 0
			for _, a := range l.got {
				if a.Reason == duty.ReviewDue {
					n++
					if a.Summary() != "Membership review due in a clinical team" {
						t.Errorf("review reminder says %q", a.Summary())
					}
				}
			}
			return n
		}
		time.Sleep(24*time.Hour + 2*time.Minute)
		synctest.Wait()
		if got := reviewsDue(logs[0]); got != 1 {
			t.Errorf("admin reminded %d times after a day; want 1", got)
		}
		if got := reviewsDue(logs[1]); got != 0 {
			t.Errorf("a plain member was reminded %d times", got)
		}
		if _, err := bea.RecordReview(ref); err == nil {
			t.Error("a plain member recorded a review")
		}
		rep, err := admin.RecordReview(ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(audit) != 1 || audit[0].team != team.ID {
			t.Errorf("audit hook calls: %v; want one for the team", audit)
		}
		if rep.LastReview.IsZero() || !rep.Due.Equal(rep.LastReview.Add(24*time.Hour)) {
			t.Errorf("report: last review %v, due %v; want due a day after the review", rep.LastReview, rep.Due)
		}
		if len(rep.Members) != 2 {
			t.Fatalf("report lists %d members; want 2", len(rep.Members))
		}
		for _, m := range rep.Members {
			if len(m.Devices) != 1 || m.Devices[0].LastSeen.IsZero() {
				t.Errorf("member %s: devices %+v; want one, last seen", m.Name, m.Devices)
			}
		}
		time.Sleep(23 * time.Hour)
		synctest.Wait()
		if got := reviewsDue(logs[0]); got != 1 {
			t.Errorf("admin reminded %d times within a day of a review; want still 1", got)
		}
		for _, n := range ns {
			n.Close()
		}
	})
}

// TestNotificationHookSeesNoContent runs the notification hook as a real command (CommandNotifier, as
// the daemon's --notify-cmd does) for 100 messages carrying patient references, and checks that what
// the command received (its arguments and environment) holds none of their text, patient
// references, the author's name or the team's name or id; and, as a control, that it did receive the
// 100 notifications.
func TestNotificationHookSeesNoContent(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "captured")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "hook.sh")
	// Each run writes its own file (runs overlap), and renames it into place once complete.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nout=$1; shift\n{ printf 'ARGS'; printf ' [%s]' \"$@\"; echo; env; } > \"$out/.$$\" && mv \"$out/.$$\" \"$out/run-$$\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	hook, err := CommandNotifier([]string{script, out}, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	_, ns := newMockNodesCfg(t, func(i int, c *Config) {
		if i == 1 {
			c.Notify = func(n Notification) { calls.Add(1); hook(n) }
		}
	}, "Dr Okonkwo-Secret", "Nurse Receiver")
	a, b := ns[0], ns[1]
	team, ref := clinicalTeam(t, a, "Oncology Ward Secret", b)
	var secrets []string
	for i := range 100 {
		text := fmt.Sprintf("patient in bay %d needs review of bloods xq%03d", i, i)
		patient := fmt.Sprintf("PTREF-%04d-zz", i)
		secrets = append(secrets, text, patient)
		if _, _, err := a.Send(ref, crdt.Message{Text: text, Patient: patient, Priority: crdt.Priority(i % 3)}); err != nil {
			t.Fatal(err)
		}
	}
	waitMessages(t, b, ref, 100)
	deadline := time.Now().Add(60 * time.Second)
	var captured []byte
	for {
		runs, _ := filepath.Glob(filepath.Join(out, "run-*"))
		if len(runs) >= 100 {
			captured = nil
			for _, r := range runs {
				b, err := os.ReadFile(r)
				if err != nil {
					t.Fatal(err)
				}
				captured = append(captured, b...)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hook ran %d times (Notify called %d times); want 100", len(runs), calls.Load())
		}
		time.Sleep(50 * time.Millisecond) // polling a file another process writes: no event to wait on
	}
	secrets = append(secrets, "Okonkwo", "Oncology", "Secret", team.ID.String(), team.ID.Short(), a.id.Device.ID().Short(), a.id.Device.ID().String())
	for _, s := range secrets {
		if bytes.Contains(captured, []byte(s)) {
			t.Errorf("the hook received %q", s)
		}
	}
	if !bytes.Contains(captured, []byte("[New message in a clinical team] [routine] [new]")) ||
		!bytes.Contains(captured, []byte("FIELDMESH_NOTIFY_PRIORITY=urgent")) {
		t.Errorf("control: the hook did not receive the expected summary and priority:\n%.400s", captured)
	}
}
