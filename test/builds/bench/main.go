// Command bench measures berth's build system against plain buildah, side
// by side in one run with the same small context, interleaved:
//
//   - berth: API POST → image pullable;
//   - buildah in berth's sandbox: pull, `buildah bud` inside rootlesskit +
//     slirp4netns with OCI isolation (berth's sandbox-init applying the
//     network policy), push — what a berth worker runs, by hand;
//   - buildah with chroot isolation: `buildah bud` + `buildah push`, the way
//     berth built before its builds were sandboxed.
//
// All three run as the same unprivileged user with a fresh vfs storage
// root. It prints the times, berth's ratio to plain buildah (target ≤ 1.25,
// or at most 3 s of overhead), the sandbox's cost over chroot isolation
// (target ≤ 1 s), the queue latency (POST → worker registered, target p50
// < 1 s) and the log latency (worker line → SSE watcher, target p50
// < 100 ms).
//
// It starts its own `bin/berth serve` on a free loopback port (as root, so
// that workers run as unprivileged build users). Missed targets are
// reported, not fatal; errors exit 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/buildhost"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/test/harness"
	"github.com/berth-dev/berth/worker/engine/buildah"
	"github.com/berth-dev/berth/worker/sandbox"
)

func main() {
	bin := flag.String("bin", "", "berth binary (default: $BERTH_BIN, or bin/berth at the module root)")
	runs := flag.Int("n", 5, "builds measured on each side")
	workerUser := flag.String("user", "berth-bench", "the unprivileged user (made when missing) that runs the buildah baselines")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *runs, *workerUser); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin string, runs int, workerUser string) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the worker and the baseline run as the unprivileged worker user")
	}
	if bin == "" {
		var err error
		if bin, err = harness.BerthBinary(); err != nil {
			return fmt.Errorf("%w; pass -bin", err)
		}
	}
	work, err := os.MkdirTemp("", "berth-buildbench-")
	if err != nil {
		return err
	}
	defer harness.RemoveAll(work)
	// The baseline's directories live below; the worker user must reach them.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	srv, err := harness.StartServer(ctx, harness.ServerOptions{
		Bin: bin, Dir: filepath.Join(work, "server"), Config: harness.BuildManagerConfig(2, 10*time.Minute) + harness.LoopbackEgressConfig,
		User: "admin", Password: harness.RandomHex(16),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: stopping berth: %v\n", err)
		}
	}()
	creds := srv.Creds()
	tools, err := harness.NewTools(filepath.Join(work, "tools"))
	if err != nil {
		return err
	}
	base := srv.Ref("admin/base:latest")
	if err := tools.PushBusybox(ctx, base, creds); err != nil {
		return fmt.Errorf("pushing the base image: %w", err)
	}
	client := harness.NewClient(srv)
	for _, r := range []string{"bench-berth", "bench-plain"} {
		if err := client.CreateRepo(ctx, "admin", r); err != nil {
			return err
		}
	}
	// A user of the baselines' own, with subordinate IDs, as berth's build
	// users have.
	wu, err := buildhost.EnsureUser(workerUser, "/etc/subuid", "/etc/subgid")
	if err != nil {
		return err
	}
	uid, gid := wu.UID, wu.GID

	dockerfile := "FROM " + base + "\nARG X=unset\nRUN echo \"$X\" > /out\nCOPY file /file\n"
	ctxFiles := []harness.Entry{{Name: "Dockerfile", Body: dockerfile}, {Name: "file", Body: "benchmark context file\n"}}
	archive, err := harness.TarGz(ctxFiles...)
	if err != nil {
		return err
	}

	fmt.Printf("== builds: berth vs buildah (in berth's sandbox, and with chroot isolation) as %s, same context, %d runs each, interleaved ==\n", workerUser, runs)
	var berthT, plainT, chrootT, queueT, logT []time.Duration
	for i := range runs {
		m, err := berthBuild(ctx, client, tools, srv.Addr, creds, archive, i)
		if err != nil {
			return fmt.Errorf("berth build %d: %w", i, err)
		}
		berthT, queueT = append(berthT, m.total), append(queueT, m.queue)
		logT = append(logT, m.logDelays...)
		p, err := plainBuild(ctx, tools, work, bin, srv.Addr, base, creds, ctxFiles, uid, gid, workerUser, sandboxed, i)
		if err != nil {
			return fmt.Errorf("sandboxed buildah baseline %d: %w", i, err)
		}
		plainT = append(plainT, p)
		c, err := plainBuild(ctx, tools, work, bin, srv.Addr, base, creds, ctxFiles, uid, gid, workerUser, chroot, i)
		if err != nil {
			return fmt.Errorf("chroot buildah baseline %d: %w", i, err)
		}
		chrootT = append(chrootT, c)
		fmt.Printf("  run %d: berth %s (queue %s)   buildah sandboxed %s   buildah chroot %s\n", i+1,
			harness.Round(m.total), harness.Round(m.queue), harness.Round(p), harness.Round(c))
	}
	bp, pp, cp := harness.Median(berthT), harness.Median(plainT), harness.Median(chrootT)
	ratio := float64(bp) / float64(pp)
	verdict := "MISS"
	if ratio <= 1.25 || bp-pp <= 3*time.Second {
		verdict = "ok"
	}
	fmt.Printf("berth   API POST → image pullable             p50 %8s\n", harness.Round(bp))
	fmt.Printf("buildah in the sandbox, bud + push → pullable p50 %8s\n", harness.Round(pp))
	fmt.Printf("buildah chroot, bud + push → pullable         p50 %8s\n", harness.Round(cp))
	fmt.Printf("berth / sandboxed buildah: ratio %.2f, overhead %s (target ≤ 1.25 or ≤ 3s): %s\n", ratio, harness.Round(bp-pp), verdict)
	fmt.Printf("sandbox / chroot isolation: ratio %.2f, cost %s per build (target ≤ 1s): %s\n",
		float64(pp)/float64(cp), harness.Round(pp-cp), okIf(pp-cp <= time.Second))
	q := harness.Median(queueT)
	fmt.Printf("queue latency POST → worker registered  p50 %s (target < 1s): %s\n", harness.Round(q), okIf(q < time.Second))
	l := harness.Median(logT)
	fmt.Printf("log latency worker line → SSE watcher   p50 %s over %d lines (target < 100ms): %s\n", harness.Round(l), len(logT), okIf(len(logT) > 0 && l < 100*time.Millisecond))
	return nil
}

// berthMeasure is one berth build.
type berthMeasure struct {
	total, queue time.Duration
	logDelays    []time.Duration
}

// berthBuild uploads the context, POSTs the build with a watcher on its
// log stream, and waits until the image is pullable.
func berthBuild(ctx context.Context, c *harness.Client, tools *harness.Tools, addr, creds string, archive []byte, i int) (berthMeasure, error) {
	var m berthMeasure
	fileID, err := c.Upload(ctx, archive)
	if err != nil {
		return m, err
	}
	tag := fmt.Sprintf("b%d", i)
	posted := time.Now()
	b, err := c.RequestBuild(ctx, "admin/bench-berth", harness.BuildRequest{FileID: fileID, DockerTags: []string{tag},
		BuildArgs: map[string]string{"X": harness.RandomHex(4)}})
	if err != nil {
		return m, err
	}
	var wg sync.WaitGroup
	var streamErr error
	var delays []time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		streamErr = c.Stream(ctx, "admin/bench-berth", b.ID, "", func(ev harness.Event) bool {
			// Worker lines: output and commands (phase and error entries
			// may come from the manager).
			if ev.Entry.Type == "" || ev.Entry.Type == "command" {
				if at := ev.Entry.Time(); !at.IsZero() {
					delays = append(delays, ev.Received.Sub(at))
				}
			}
			return true
		})
	}()
	// The watcher writes delays until it returns.
	defer wg.Wait()
	for {
		b, err = c.GetBuild(ctx, "admin/bench-berth", b.ID)
		if err != nil {
			return m, err
		}
		if store.BuildPhase(b.Phase).TerminalView() {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if b.Phase != "complete" {
		return m, fmt.Errorf("build %s ended %s: %v", b.ID, b.Phase, b.Error)
	}
	if err := tools.Pullable(ctx, addr+"/admin/bench-berth:"+tag, creds); err != nil {
		return m, err
	}
	m.total = time.Since(posted)
	wg.Wait()
	m.logDelays = delays
	if streamErr != nil {
		return m, fmt.Errorf("log stream: %w", streamErr)
	}
	entries, err := c.Logs(ctx, "admin/bench-berth", b.ID, 0)
	if err != nil {
		return m, err
	}
	// The worker reports unpacking right after it registered.
	for _, e := range entries {
		if e.Type == "phase" && e.Message == "unpacking" {
			m.queue = e.Time().Sub(posted)
			break
		}
	}
	if m.queue == 0 {
		return m, fmt.Errorf("build %s logged no unpacking phase", b.ID)
	}
	return m, nil
}

// isolation is how a baseline runs buildah's RUN steps.
type isolation string

const (
	// sandboxed is berth's: pull first, build inside rootlesskit with OCI
	// isolation and the network policy, push.
	sandboxed isolation = "sandbox"
	// chroot is what berth used before: one `buildah bud` with chroot
	// isolation on the host's network, pulling as it goes.
	chroot isolation = "chroot"
)

// plainBuild runs buildah as the given user with a fresh storage root,
// isolated as iso says, then checks the image is pullable.
func plainBuild(ctx context.Context, tools *harness.Tools, work, bin, addr, base, creds string, files []harness.Entry, uid, gid int, workerUser string, iso isolation, i int) (time.Duration, error) {
	dir := filepath.Join(work, fmt.Sprintf("plain-%s-%d", iso, i))
	ctxDir := filepath.Join(dir, "context")
	for _, d := range []string{dir, ctxDir, filepath.Join(dir, "home"), filepath.Join(dir, "run"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return 0, err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return 0, err
		}
	}
	for _, f := range files {
		p := filepath.Join(ctxDir, f.Name)
		if err := os.WriteFile(p, []byte(f.Body), 0o644); err != nil {
			return 0, err
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return 0, err
		}
	}
	ref := fmt.Sprintf("%s/admin/bench-plain:%s%d", addr, iso, i)
	global := []string{"buildah", "--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run", "storage"), "--storage-driver", "vfs"}
	arg := "X=" + harness.RandomHex(4)
	var steps [][]string
	switch iso {
	case chroot:
		steps = [][]string{
			append(slices.Clone(global), "bud", "--isolation", "chroot", "--tls-verify=false", "--creds", creds,
				"--build-arg", arg, "-t", ref, ctxDir),
		}
	case sandboxed:
		// The sandbox's rootlesskit state needs a short path (unix sockets).
		state, err := os.MkdirTemp("/tmp", "berth-bench-sandbox-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(state)
		if err := os.Chown(state, uid, gid); err != nil {
			return 0, err
		}
		policy, err := sandbox.DefaultPolicy(nil)
		if err != nil {
			return 0, err
		}
		box := sandbox.Config{Init: []string{bin, "sandbox-init"}, StateDir: state, Network: policy}
		steps = [][]string{
			append(slices.Clone(global), "pull", "--tls-verify=false", "--creds", creds, base),
			box.Wrap(slices.Concat(global, []string{"bud"}, buildah.IsolationArgs(),
				[]string{"--build-arg", arg, "-t", ref, ctxDir})),
		}
	}
	steps = append(steps, append(slices.Clone(global), "push", "--tls-verify=false", "--creds", creds, ref, "docker://"+ref))
	start := time.Now()
	for _, s := range steps {
		args := append([]string{"-u", workerUser, "--", "env", "-i",
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=" + filepath.Join(dir, "home"), "XDG_RUNTIME_DIR=" + filepath.Join(dir, "run"),
			"TMPDIR=" + filepath.Join(dir, "tmp")}, s...)
		cmd := exec.CommandContext(ctx, "runuser", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %w\n%s", strings.Join(s[:min(len(s), 8)], " "), err, strings.ReplaceAll(string(out), creds, "***"))
		}
	}
	if err := tools.Pullable(ctx, ref, creds); err != nil {
		return 0, err
	}
	took := time.Since(start)
	// Not part of the timing: the worker's directory goes away too, but
	// after the image is pullable.
	if err := harness.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "bench: removing %s: %v\n", dir, err)
	}
	return took, nil
}

func okIf(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}
