package builds

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/test/harness"
)

// TestHostileBuildIsContained runs a victim build (a secret file in its
// context, a secret build argument, a long RUN step) and, while that step
// runs, a hostile build whose RUN step is escapeprobe: it tries the double
// chroot, reads every process's command line and environment, SIGKILLs the
// victim's worker and the server, connects to every port the server
// listens on (the API, the worker gRPC port) and to PostgreSQL and Redis, on loopback, slirp4netns's gateway and the host's
// own addresses, reads the data directory and the victim's work directory,
// and searches every file it can see for the victim's secrets. Every
// attempt must be blocked, the victim's image must complete with its own
// content, and its log must hold only its own lines.
func TestHostileBuildIsContained(t *testing.T) {
	e := requireEnv(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: the server runs each build as a user of its own only as root")
	}
	probe := buildProbe(t)

	secretFile := "TOP-SECRET-" + harness.RandomHex(8)
	secretArg := "npm_VICTIM_" + harness.RandomHex(8)
	victimRepo := newRepo(t, e, "victim")
	victim := submit(t, e, victimRepo, harness.BuildRequest{DockerTags: []string{"v1"}, BuildArgs: map[string]string{"NPM_TOKEN": secretArg}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile(
			"COPY SECRET.txt /SECRET.txt",
			"ARG NPM_TOKEN",
			`RUN echo victim-start && sleep 30 && echo victim-done && printf %s "$NPM_TOKEN" > /token`)},
		harness.Entry{Name: "SECRET.txt", Body: secretFile})
	waitForLine(t, e, victimRepo, victim.ID, "victim-start")
	worker := workerOf(t, e, victimRepo, victim.ID)
	workDir, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", worker.PID))
	if err != nil {
		t.Fatal(err)
	}

	ports := listeningPorts(t, e.srv.PID())
	ports = append(ports, "5432", "6379")
	hosts := append([]string{"127.0.0.1", "10.0.2.2"}, hostAddresses(t)...)
	paths := []string{e.srv.DataDir, workDir, filepath.Join(workDir, "src", "SECRET.txt"), filepath.Join(workDir, "buildah", "auth.json"), filepath.Dir(filepath.Dir(workDir))}
	if ents, err := os.ReadDir(e.srv.DataDir); err == nil {
		for _, en := range ents {
			paths = append(paths, filepath.Join(e.srv.DataDir, en.Name()))
		}
	}
	var encoded []string
	for _, s := range []string{secretFile, secretArg} {
		encoded = append(encoded, base64.StdEncoding.EncodeToString([]byte(s)))
	}
	args := []string{"/probe",
		"--secrets-b64=" + strings.Join(encoded, ","),
		"--host-dir=" + e.srv.DataDir,
		"--pids=" + strconv.Itoa(worker.PID) + "," + strconv.Itoa(e.srv.PID()),
		"--ports=" + strings.Join(ports, ","),
		"--hosts=" + strings.Join(hosts, ","),
		"--paths=" + strings.Join(paths, ","),
	}
	run, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	probeBin, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	hostileRepo := newRepo(t, e, "hostile")
	hostile := submit(t, e, hostileRepo, harness.BuildRequest{DockerTags: []string{"v1"}},
		harness.Entry{Name: "Dockerfile", Body: e.dockerfile("COPY probe /probe", "RUN "+string(run))},
		harness.Entry{Name: "probe", Body: string(probeBin), Mode: 0o755})
	hb, _ := await(t, e, hostileRepo, hostile.ID, nil)
	hostileLog := logsOf(t, e, hostileRepo, hostile.ID)
	if hb.Phase != "complete" {
		t.Fatalf("the hostile build ended %s (%s)\n%s", hb.Phase, deref(hb.Error), formatLog(hostileLog))
	}
	tries, done := 0, false
	for _, en := range hostileLog {
		if strings.Contains(en.Message, secretFile) || strings.Contains(en.Message, secretArg) {
			t.Errorf("the hostile build's log shows a victim secret: %q", en.Message)
		}
		if en.Message == "PROBE DONE" {
			done = true
		}
		rest, ok := strings.CutPrefix(en.Message, "ATTEMPT ")
		if !ok {
			continue
		}
		tries++
		if strings.Contains(rest, ": REACHED ") {
			t.Errorf("escape attempt succeeded: %s", rest)
		} else {
			t.Logf("held: %s", rest)
		}
	}
	// double chroot, processes, 2 signals, every connection, every path,
	// the file search.
	if want := 1 + 1 + 2 + len(hosts)*len(ports) + len(paths) + 1; !done || tries != want {
		t.Errorf("the probe made %d attempts (done: %v), want %d\n%s", tries, done, want, formatLog(hostileLog))
	}

	vb, _ := await(t, e, victimRepo, victim.ID, nil)
	victimLog := logsOf(t, e, victimRepo, victim.ID)
	if vb.Phase != "complete" {
		t.Fatalf("the victim build ended %s (%s)\n%s", vb.Phase, deref(vb.Error), formatLog(victimLog))
	}
	if attempts(victimLog) != 1 {
		t.Errorf("the victim build took %d attempts: its worker was disturbed", attempts(victimLog))
	}
	sawDone := false
	for _, en := range victimLog {
		if strings.Contains(en.Message, "ATTEMPT") || strings.Contains(en.Message, "PROBE") || strings.Contains(en.Message, secretArg) {
			t.Errorf("the victim's log holds a line that is not its own (or its secret): %q", en.Message)
		}
		sawDone = sawDone || en.Message == "victim-done"
	}
	if !sawDone {
		t.Errorf("the victim's RUN step did not finish\n%s", formatLog(victimLog))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	files, err := e.toolsFor(t).ReadImageFiles(ctx, e.srv.Addr+"/"+victimRepo+"@"+vb.ManifestDigests["v1"], e.creds(), "/SECRET.txt", "/token")
	if err != nil {
		t.Fatal(err)
	}
	if files["/SECRET.txt"] != secretFile || files["/token"] != secretArg {
		t.Errorf("the victim's image holds SECRET.txt %q and token %q, want its own", files["/SECRET.txt"], files["/token"])
	}
}

// buildProbe builds escapeprobe statically into a temporary directory.
func buildProbe(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./escapeprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building escapeprobe: %v\n%s", err, b)
	}
	return out
}

// waitForLine waits until the build's log has a line equal to line.
func waitForLine(t *testing.T, e *env, repo, id, line string) {
	t.Helper()
	deadline := time.Now().Add(buildTimeout)
	for time.Now().Before(deadline) {
		for _, en := range logsOf(t, e, repo, id) {
			if en.Message == line {
				return
			}
		}
		b, err := e.client.GetBuild(context.Background(), repo, id)
		if err == nil && store.BuildPhase(b.Phase).TerminalView() {
			t.Fatalf("build %s ended %s before logging %q\n%s", id, b.Phase, line, dumpLogs(e, repo, id))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("build %s never logged %q\n%s", id, line, dumpLogs(e, repo, id))
}

// listeningPorts lists the TCP ports process pid listens on, from the
// sockets among its open files.
func listeningPorts(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	var ports []string
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && !slices.Contains(ports, strconv.Itoa(int(p))) {
				ports = append(ports, strconv.Itoa(int(p)))
			}
		}
		f.Close()
	}
	// The embedded Redis opens no socket at all.
	if len(ports) < 2 {
		t.Fatalf("server %d listens on ports %v; want at least the API and the worker gRPC port", pid, ports)
	}
	return ports
}

// hostAddresses are the host's own IPv4 addresses other than loopback.
func hostAddresses(t *testing.T) []string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
			out = append(out, ip.IP.String())
		}
	}
	return out
}
