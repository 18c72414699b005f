package mobile

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBind runs gobind (golang.org/x/mobile, pinned as a tool in go.mod: go tool gobind) on this
// package, as make mobile-bind does, and checks that the Java and Objective-C it generates carry
// every part of the facade: a name outside gomobile's subset of Go is skipped by gobind and would be
// missing. With a JDK on the machine it then compiles the Java (against a stub of the one Android
// class it names, testdata/androidstub). Skipped by -short: gobind loads the packages (minutes on a
// busy machine).
func TestBind(t *testing.T) {
	if testing.Short() {
		t.Skip("gobind takes minutes; skipped by -short")
	}
	out := t.TempDir()
	cmd := exec.Command("go", "tool", "gobind", "-lang=java,objc", "-outdir="+out, ".")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gobind: %v\n%s", err, stderr.String())
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "unsupported") || strings.Contains(line, "skipped") {
			t.Errorf("gobind: %s", line)
		}
	}
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(out, rel))
		if err != nil {
			t.Fatalf("gobind did not generate %s: %v", rel, err)
		}
		return string(b)
	}
	java := read("java/mobile/Node.java")
	for _, want := range []string{
		"public Node(String dataDir)",
		"public native void create(String name, String passphrase) throws Exception;",
		"public native void start(String passphrase) throws Exception;",
		"public native void stop() throws Exception;",
		"public native void lock() throws Exception;",
		"public native void unlock(String passphrase) throws Exception;",
		"public native void wipe() throws Exception;",
		"public native boolean isLocked();",
		"public native TeamList teams() throws Exception;",
		"public native Team createTeam(String name, String kind) throws Exception;",
		"public native String invite(String team, long ttlSeconds) throws Exception;",
		"public native Team join(String code) throws Exception;",
		"public native String send(String team, String text, String priority, String patient, String replyTo) throws Exception;",
		"public native MessageList messages(String team, long limit) throws Exception;",
		"public native MemberList members(String team) throws Exception;",
		"public native void setEvents(Events e);",
		"public native void setRadio(Radio r);",
		"public native void radioReceived(String endpoint, byte[] payload);",
	} {
		if !strings.Contains(java, want) {
			t.Errorf("Node.java lacks %q", want)
		}
	}
	for file, wants := range map[string][]string{
		"java/mobile/Events.java":   {"public void teamChanged(String teamID);", "public void stopped();"},
		"java/mobile/Radio.java":    {"public void send(String endpoint, byte[] payload) throws Exception;", "public void connect(String endpoint) throws Exception;"},
		"java/mobile/Message.java":  {"public final native String getText();", "public final native long getTimeMillis();"},
		"java/mobile/TeamList.java": {"public native Team get(long i);", "public native long len();"},
		"src/gobind/Mobile.objc.h":  {"@interface MobileNode", "- (BOOL)start:(NSString* _Nullable)passphrase error:(NSError* _Nullable* _Nullable)error;", "@protocol MobileRadio", "@protocol MobileEvents"},
	} {
		text := read(file)
		for _, want := range wants {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %q", file, want)
			}
		}
	}

	javac, err := exec.LookPath("javac")
	if err != nil {
		t.Log("no javac on this machine: the generated Java was not compiled")
		return
	}
	var srcs []string // gobind copies its Java runtime (go.Seq) into java/go
	for _, dir := range []string{"java/go", "java/mobile"} {
		m, _ := filepath.Glob(filepath.Join(out, dir, "*.java"))
		srcs = append(srcs, m...)
	}
	args := append([]string{"-d", filepath.Join(out, "classes"), "-sourcepath", "testdata/androidstub", "-Xlint:none"}, srcs...)
	if b, err := exec.Command(javac, args...).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(out, "classes", "mobile", "Node.class")); err != nil {
		t.Errorf("javac made no mobile/Node.class: %v", err)
	}
}
