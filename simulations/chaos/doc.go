// Package chaos is the chaos test of issue #5: the real fieldmesh binary, as separate processes in
// Linux network namespaces, through partitions, packet loss, slow links and kill -9, checked for the
// two promises of GOALS.md: nothing acknowledged is lost, and nothing is in the clear.
//
// The lab ([Lab]) is a star: a hub namespace holding a bridge, and one namespace per process joined
// to it by a veth pair, with addresses in 10.77.0.0/24 that exist only inside the run's namespaces.
// Partitions are nftables drop rules in the hub's bridge forward chain (or a port set down), loss is
// a "numgen random mod 100 < 20 drop" rule per port, slow links are a tbf qdisc (this kernel has no
// netem: latency and jitter are the mocknet tests' business), and one tcpdump in the hub captures
// every frame.
//
// A run ([Run]) starts N device processes (`fieldmesh up`, each dialling all the others) and, when
// the binary has the relay commands ([RelayCommands]), a relay that every device uses; makes the
// devices one clinical team (one creator, invites joined with the network whole); then for the
// chaos phase sends a message from a random running device every SendEvery (a message is
// acknowledged when `fieldmesh send` exits 0), one in AttachEvery with a document attached, while a schedule drawn from the seed partitions and
// heals, isolates, kills and restarts devices, with some links lossy and some slow. Then it heals
// everything, restarts what is down, and polls `messages --json` on every device until all list
// the same messages in the same order including every acknowledged one, or the deadline passes.
//
// Checks ([Check], and the scan): every acknowledged message on every device exactly once, in the
// same order, with its text and patient reference; every daemon exits 0 on SIGTERM and no log holds
// a panic or race report; and no message text, patient reference, team name, member name,
// passphrase or run of AttachRun bytes of an attachment occurs in the relay's data directory (its raw files, and its database opened with its
// own key file, [RelayDBs]: the box's owner has that file too), the devices' data directories, the
// logs, the processes' HOME and TMPDIR, or the capture, scanned both as raw frames and as TCP
// streams reassembled by sequence number ([Pcap]), so a text split across two segments is found.
// Checks that can only pass vacuously are guarded: a canary datagram sent across the bridge must
// be found in the capture, and a control run (Config.Control, a binary built with
// -tags fieldmesh_noseal) must find plaintext, attachments' bytes included, or the scan is shown
// to be blind.
//
// The test itself (chaos_test.go) is built only with -tags chaos and needs root, iproute2,
// nftables and tcpdump; run.sh runs it and removes the run's namespaces whatever happens. The
// pure parts (Scanner, Pcap, Check) have ordinary tests.
//
// Concurrency: a Lab's methods are safe for concurrent use. Run is one call; it waits for every
// goroutine and process it started, and tears the lab down, before it returns.
package chaos
