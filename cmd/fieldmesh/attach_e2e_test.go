// The end-to-end test of attachments (issue #17), as real processes on loopback driven through the
// CLI: a 2 MB camera JPEG with an EXIF/GPS segment goes from A to B; A is killed with SIGKILL
// halfway through the transfer, comes back, and B gets the rest without A sending again what B
// already stored; both save the photo byte-identical, re-encoded to 1600 × 1200 with no EXIF; and no
// 64-byte run of the photo is in either data directory, the daemons' logs, HOME or TMPDIR (the
// saved copies, outside them, are the scanner's control).
//
// The daemons are built with the test-only tag fieldmesh_slowchunks (node/attach_pace_slow.go), which
// paces each chunk a node serves, so the transfer takes seconds on loopback and the kill can land
// halfway. Every wait has a deadline; the waits on a chunk count poll the CLI.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

type e2eAttachmentOut struct {
	Ref     string `json:"ref"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Size    int    `json:"size"`
	Chunks  int    `json:"chunks"`
	Stored  int    `json:"stored"`
}

// e2ePhoto returns a camera-like JPEG of w × h at quality 95 with an APP1 Exif segment that holds
// marker (where a camera keeps GPS position and serial numbers).
func e2ePhoto(t *testing.T, w, h int, marker string) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(7, 7))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := uint8(r.IntN(48))
			img.Set(x, y, color.RGBA{uint8(x*200/w) + n, uint8(y*200/h) + n, 90 + n, 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	seg := append([]byte("Exif\x00\x00MM\x00\x2a"), marker...)
	app1 := binary.BigEndian.AppendUint16([]byte{0xff, 0xe1}, uint16(len(seg)+2))
	out := append([]byte{}, b.Bytes()[:2]...)
	out = append(out, app1...)
	out = append(out, seg...)
	return append(out, b.Bytes()[2:]...)
}

func TestAttachmentE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs two daemons; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets, SIGKILL)")
	}
	c := e2eNewCluster(t)
	c.bin = e2eBuildTagged(t, t.TempDir(), e2eRaceEnabled(), "fieldmesh_slowchunks")

	a := c.node(t, "A", "Dr Banda")
	b := c.node(t, "B", "Nurse Phiri")
	team := e2eTeamUp(t, c, "Wound clinic", []string{"--kind", "clinical"}, a, b)

	files := filepath.Join(c.root, "files") // outside every data directory, HOME and TMPDIR
	if err := os.Mkdir(files, 0o700); err != nil {
		t.Fatal(err)
	}
	const marker = "GPS 51.5N 0.12W SERIAL CAM-0042 PATIENT-BED-4"
	orig := e2ePhoto(t, 2200, 1650, marker)
	photoPath := filepath.Join(files, "wound.jpg")
	if err := os.WriteFile(photoPath, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("camera photo: %d bytes, 2200 × 1650, EXIF segment included", len(orig))

	var sent e2eSendOut
	if err := c.decode("send --attach", a.runJSON(t, "send", team.ID, "wound, day 3", "--attach", photoPath), &sent, nil); err != nil {
		t.Fatal(err)
	}
	list := func(n *e2eNode) e2eAttachmentOut {
		t.Helper()
		var as []e2eAttachmentOut
		if err := json.Unmarshal(n.runJSON(t, "attachment", "list", team.ID), &as); err != nil {
			t.Fatal(err)
		}
		if len(as) != 1 {
			return e2eAttachmentOut{}
		}
		return as[0]
	}
	// waitStored polls B's list until cond holds, with a deadline.
	waitStored := func(what string, timeout time.Duration, cond func(e2eAttachmentOut) bool) e2eAttachmentOut {
		t.Helper()
		deadline := time.Now().Add(c.timeout(timeout))
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			at := list(b)
			if cond(at) {
				return at
			}
			if time.Now().After(deadline) {
				t.Fatalf("B: %s: not within %v (last: %+v)", what, timeout, at)
			}
			<-tick.C
		}
	}
	first := waitStored("3 chunks stored", 60*time.Second, func(at e2eAttachmentOut) bool { return at.Stored >= 3 })
	a.daemon.kill() // SIGKILL, halfway
	a.daemon = nil
	half := list(b)
	t.Logf("A killed when B held %d of %d chunks (%d at the kill's decision)", half.Stored, half.Chunks, first.Stored)
	if half.Stored >= half.Chunks || half.Chunks < 6 {
		t.Fatalf("the kill did not land halfway: %d of %d chunks", half.Stored, half.Chunks)
	}
	if half.Message != sent.ID || half.Type != "image/jpeg" {
		t.Fatalf("B's attachment %+v; want an image/jpeg of message %s", half, sent.ID)
	}
	// B cannot save a half-fetched attachment; it says so, and writes nothing.
	partial := filepath.Join(files, "partial.jpg")
	if res := b.run(t, "attachment", "save", half.Ref, partial); res.code == 0 || !strings.Contains(res.stderr, "not all on this device") {
		t.Errorf("B: saving a half-fetched attachment: %s", res)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Errorf("a half-fetched attachment was written: %v", err)
	}

	a.up(t)
	done := waitStored("all chunks stored after A's restart", 90*time.Second, func(at e2eAttachmentOut) bool { return at.Chunks > 0 && at.Stored == at.Chunks })

	// No re-sending: B received, over the chunk protocol, at most the chunks once and the two that
	// may have been in flight at the kill; sending again what B stored would cost half.Stored more.
	var rep struct {
		Protocols []struct {
			Protocol string `json:"protocol"`
			Received uint64 `json:"received"`
		} `json:"protocols"`
	}
	if err := json.Unmarshal(b.runJSON(t, "usage"), &rep); err != nil {
		t.Fatal(err)
	}
	var received uint64
	for _, p := range rep.Protocols {
		if p.Protocol == "/fieldmesh/chunk/1.0.0" {
			received = p.Received
		}
	}
	const perChunk = 32<<10 + 16 + 64 // a sealed chunk, its frame and stream overhead
	limit := uint64((done.Chunks + 2) * perChunk)
	t.Logf("B received %d bytes over the chunk protocol for a %d-byte attachment of %d chunks (limit %d; a full re-send would be about %d)",
		received, done.Size, done.Chunks, limit, uint64(done.Chunks+half.Stored)*perChunk)
	if received == 0 || received > limit {
		t.Errorf("B received %d chunk bytes; want 1..%d", received, limit)
	}

	// Both save it byte-identical, re-encoded, with no EXIF.
	pathA, pathB := filepath.Join(files, "a.jpg"), filepath.Join(files, "b.jpg")
	if res := a.run(t, "attachment", "save", done.Ref, pathA); res.code != 0 {
		t.Fatalf("A: %s", res)
	}
	if res := b.run(t, "attachment", "save", sent.ID+"/1", pathB); res.code != 0 {
		t.Fatalf("B: %s", res)
	}
	gotA, _ := os.ReadFile(pathA)
	gotB, err := os.ReadFile(pathB)
	if err != nil || !bytes.Equal(gotA, gotB) || len(gotB) != done.Size {
		t.Fatalf("A saved %d bytes, B %d (%v); want the same %d", len(gotA), len(gotB), err, done.Size)
	}
	if fi, err := os.Stat(pathB); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("saved file mode %v (%v); want 0600", fi.Mode().Perm(), err)
	}
	if bytes.Contains(gotB, []byte(marker)) || bytes.Contains(gotB, []byte("Exif")) {
		t.Error("the received photo kept its EXIF segment")
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(gotB))
	if err != nil || cfg.Width != 1600 || cfg.Height != 1200 {
		t.Errorf("received photo %d × %d (%v); want 1600 × 1200", cfg.Width, cfg.Height, err)
	}
	if res := b.run(t, "attachment", "save", sent.ID+"/1", pathB); res.code == 0 {
		t.Errorf("B: save over an existing file succeeded without --force")
	}
	t.Logf("sent photo: %d bytes (%.1f%% of the camera's file)", len(gotB), 100*float64(len(gotB))/float64(len(orig)))

	// Plaintext scan: 64-byte runs of the photo as sent and of the camera's file.
	var needles []string
	for _, img := range [][]byte{gotB, orig} {
		for i := 1; i <= 8; i++ {
			off := len(img) * i / 10
			needles = append(needles, string(img[off:off+64]))
		}
	}
	for _, n := range []*e2eNode{a, b} {
		if err := n.stop(t, e2eSignal); err != nil {
			t.Errorf("%s: exit: %v", n.label, err)
		}
	}
	roots := []string{a.dir, b.dir, a.logPath, b.logPath, filepath.Join(c.root, "home"), filepath.Join(c.root, "tmp")}
	hits, err := e2eScan(roots, needles, e2eScanChunk)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hits {
		t.Errorf("plaintext of the photo found: %+v", h)
	}
	control, err := e2eScan([]string{files}, needles, e2eScanChunk)
	if err != nil {
		t.Fatal(err)
	}
	if len(control) < 3 { // the camera file, and the two saved copies
		t.Errorf("control: the scanner found the photo in %d files under %s; want 3", len(control), files)
	}
	nf, size, _ := e2eFiles(a.dir)
	t.Logf("scanned A's and B's data directories (A: %d files, %d bytes), logs, HOME and TMPDIR: %d hits; control: %d hits in the saved files",
		nf, size, len(hits), len(control))
}

// e2eBuildTagged builds the fieldmesh binary with build tags into dir and returns its path.
func e2eBuildTagged(t *testing.T, dir string, race bool, tags string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not on PATH: %v", err)
	}
	bin := filepath.Join(dir, "fieldmesh-"+tags)
	args := []string{"build", "-tags", tags, "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(t.Context(), goBin, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// TestAttachmentRelayE2E: C reaches only the clinic relay R. A sends the 2 MB camera photo while C
// is off; A leaves the sealed chunks at R and goes off; C comes back, gets the message and the
// photo from R alone, byte-identical to what A saved, with no EXIF; no 64-byte run of the photo is
// in R's data directory or log.
func TestAttachmentRelayE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs a relay and two devices; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end: needs Linux (unix sockets)")
	}
	c := e2eNewCluster(t)
	wait := c.timeout(30 * time.Second)
	a := c.node(t, "A", "Dr Mwale")
	cc := c.node(t, "C", "CHW Tembo")
	team := e2eTeamWithRelay(t, c, "Outreach", a, cc)
	r, rLog, aLog := team.R, team.RLog, team.Logs[a]
	if err := cc.stop(t, e2eSignal); err != nil {
		t.Errorf("C: exit: %v", err)
	}

	files := filepath.Join(c.root, "files")
	if err := os.Mkdir(files, 0o700); err != nil {
		t.Fatal(err)
	}
	orig := e2ePhoto(t, 2200, 1650, "GPS 12.1S 34.9E SERIAL CAM-7 PATIENT-HUT-3")
	photoPath := filepath.Join(files, "rash.jpg")
	if err := os.WriteFile(photoPath, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	var sent e2eSendOut
	from := rLog.count()
	if err := c.decode("send --attach", a.runJSON(t, "send", team.ID, "rash, child, day 2", "--attach", photoPath), &sent, nil); err != nil {
		t.Fatal(err)
	}
	rLog.waitLine(t, "R stores A's message", from, wait, r.daemon.exited, `msg="relay stored envelope"`, "id="+sent.ID[:8])
	// A reconciles with R (as it does on every contact): it leaves the chunks there.
	if res := a.run(t, "sync"); res.code != 0 {
		t.Fatalf("A: %s", res)
	}
	rLog.waitLine(t, "R stores the photo's chunks", from, wait, r.daemon.exited, `msg="relay stored chunks"`)
	aLog.waitLine(t, "A offers R the photo", 0, wait, a.daemon.exited, `msg="offered attachments to a relay"`, "messages=1")
	pathA := filepath.Join(files, "a.jpg")
	if res := a.run(t, "attachment", "save", sent.ID, pathA); res.code != 0 {
		t.Fatalf("A: %s", res)
	}
	if err := a.stop(t, e2eSignal); err != nil {
		t.Errorf("A: exit: %v", err)
	}

	// C comes back reaching R only (remembered relay, no bootstrap, no mDNS).
	e2eUpWatched(t, cc)
	fc := cc.follow(t, team.ID)
	fc.waitFor(t, wait, "C shows A's message, through R", e2eHasIDs([]string{sent.ID}))
	fc.stop()
	deadline := time.Now().Add(c.timeout(60 * time.Second))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var at e2eAttachmentOut
	for {
		var as []e2eAttachmentOut
		if err := json.Unmarshal(cc.runJSON(t, "attachment", "list", team.ID), &as); err != nil {
			t.Fatal(err)
		}
		if len(as) == 1 && as[0].Chunks > 0 && as[0].Stored == as[0].Chunks {
			at = as[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("C: the photo's chunks did not all arrive from R (last: %+v)", as)
		}
		<-tick.C
	}
	pathC := filepath.Join(files, "c.jpg")
	if res := cc.run(t, "attachment", "save", at.Ref, pathC); res.code != 0 {
		t.Fatalf("C: %s", res)
	}
	gotA, _ := os.ReadFile(pathA)
	gotC, err := os.ReadFile(pathC)
	if err != nil || !bytes.Equal(gotA, gotC) || len(gotC) == 0 {
		t.Fatalf("C saved %d bytes (%v), A %d; want the same bytes", len(gotC), err, len(gotA))
	}
	if bytes.Contains(gotC, []byte("Exif")) || bytes.Contains(gotC, []byte("GPS 12.1S")) {
		t.Error("the photo C got kept its EXIF segment")
	}
	t.Logf("C got the %d-byte photo (%d chunks) from R alone", len(gotC), at.Chunks)

	if err := cc.stop(t, e2eSignal); err != nil {
		t.Errorf("C: exit: %v", err)
	}

	// A starts again: R confirmed it holds the photo's chunks, and A remembers it, so it offers
	// them no more.
	aLog = e2eUpWatched(t, a, "--attachment-budget=3")
	aLog.waitLine(t, "A enrols at R again", 0, wait, a.daemon.exited, `msg="enrolled at relay"`)
	var ast struct {
		Attachments struct {
			Bytes   int64 `json:"bytes"`
			Chunks  int   `json:"chunks"`
			Budget  int64 `json:"budget"`
			Evicted int   `json:"evicted"`
		} `json:"attachments"`
	}
	if err := c.decode("status", a.runJSON(t, "status"), &ast, nil); err != nil {
		t.Fatal(err)
	}
	if got := ast.Attachments; got.Budget != 3<<20 || got.Chunks != at.Chunks || got.Bytes < int64(len(gotC)) || got.Evicted != 0 {
		t.Errorf("A's status, attachments: %+v; want the photo's %d chunks, budget 3 MiB, none evicted", got, at.Chunks)
	}
	if res := a.run(t, "sync"); res.code != 0 {
		t.Fatalf("A: %s", res)
	}
	line, _ := aLog.waitLine(t, "A's push to R after its restart", 0, wait, a.daemon.exited, `msg="offered attachments to a relay"`)
	if !strings.Contains(line, "messages=0") {
		t.Errorf("after a restart A offered R again the chunks R confirmed: %s", line)
	}
	if err := a.stop(t, e2eSignal); err != nil {
		t.Errorf("A: exit: %v", err)
	}
	var needles []string
	for _, img := range [][]byte{gotC, orig} {
		for i := 1; i <= 8; i++ {
			off := len(img) * i / 10
			needles = append(needles, string(img[off:off+64]))
		}
	}
	hits, err := e2eScan([]string{r.dir, r.logPath, cc.dir, cc.logPath}, needles, e2eScanChunk)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hits {
		t.Errorf("plaintext of the photo found: %+v", h)
	}
	if control, err := e2eScan([]string{files}, needles, e2eScanChunk); err != nil || len(control) < 3 {
		t.Errorf("control: %d hits in the saved files (%v); want 3 files", len(control), err)
	}
}

// TestAttachmentLinkE2E measures, on a shaped link, how long the 2 MB camera photo takes from A to
// B, and how much sooner the message's text shows. It runs only with FIELDMESH_E2E_TBF set, inside a
// network namespace whose loopback is shaped (make attach-tbf: tc tbf at 256 kbit/s); it checks
// that the photo arrives whole and logs the times.
func TestAttachmentLinkE2E(t *testing.T) {
	link := os.Getenv("FIELDMESH_E2E_TBF")
	if link == "" || testing.Short() {
		t.Skip("measurement on a shaped link: run with make attach-tbf")
	}
	c := e2eNewCluster(t)
	a := c.node(t, "A", "Dr Banda")
	b := c.node(t, "B", "Nurse Phiri")
	for _, n := range []*e2eNode{a, b} {
		if res := n.run(t, "init", "--name", n.name); res.code != 0 {
			t.Fatalf("%s: %s", n.label, res)
		}
		n.up(t)
	}
	var team e2eTeamOut
	if err := c.decode("team create", a.runJSON(t, "team", "create", "Wound clinic"), &team, nil); err != nil {
		t.Fatal(err)
	}
	var inv e2eInviteOut
	if err := c.decode("team invite", a.runJSON(t, "team", "invite", team.ID), &inv, nil); err != nil {
		t.Fatal(err)
	}
	if res := b.runWith(t, b.pass, c.timeout(120*time.Second), "team", "join", inv.Code); res.code != 0 {
		t.Fatalf("B: %s", res)
	}
	files := filepath.Join(c.root, "files")
	if err := os.Mkdir(files, 0o700); err != nil {
		t.Fatal(err)
	}
	photoPath := filepath.Join(files, "wound.jpg")
	if err := os.WriteFile(photoPath, e2ePhoto(t, 2200, 1650, "GPS"), 0o600); err != nil {
		t.Fatal(err)
	}
	fb := b.follow(t, team.ID)
	var sent e2eSendOut
	start := time.Now() // the CLI's send includes re-encoding the photo and sealing it
	if err := c.decode("send --attach", a.runJSON(t, "send", team.ID, "wound, day 3", "--attach", photoPath), &sent, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("send --attach returned after %v", time.Since(start).Round(10*time.Millisecond))
	shown := fb.waitFor(t, c.timeout(120*time.Second), "B shows the text", e2eHasIDs([]string{sent.ID}))
	fb.stop()
	deadline := start.Add(c.timeout(10 * time.Minute))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var as []e2eAttachmentOut
		if err := json.Unmarshal(b.runJSON(t, "attachment", "list", team.ID), &as); err != nil {
			t.Fatal(err)
		}
		if len(as) == 1 && as[0].Chunks > 0 && as[0].Stored == as[0].Chunks {
			t.Logf("link %s: the text showed after %v; the %d-byte photo (%d chunks) was whole after %v",
				link, shown.Sub(start).Round(10*time.Millisecond), as[0].Size, as[0].Chunks, time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the photo was not whole within 10 min: %+v", as)
		}
		<-tick.C
	}
}
