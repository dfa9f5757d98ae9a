// Command bench measures issue 5's build triggers: `git push` → image
// pullable through a custom-git trigger, against the same steps done by
// hand on the same commit (`git clone` from the same git daemon, then
// `buildah bud` and `buildah push` to berth as an unprivileged user with a
// fresh vfs storage root and chroot isolation, the least a build could cost
// by hand; berth's builds also pay for their sandbox). It
// prints both p50s, their ratio (target ≤ 1.3, or at most 3 s of overhead),
// and the webhook receipt → build queued latency (target p50 < 50 ms).
//
// It starts its own `bin/berth serve` on a free loopback port (as root, so
// that workers run as the unprivileged worker user), pushes a busybox base
// image, and serves a bare repository with `git daemon` whose post-receive
// hook POSTs the custom-git payload with curl. "Pullable" is the first 200
// of GET /v2/<repo>/manifests/<short sha>, polled with a pull token. Missed
// targets are reported, not fatal; errors exit 1.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/buildhost"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/test/harness"
)

// Targets of issue 5's benchmark.
const (
	targetRatio    = 1.3
	targetOverhead = 3 * time.Second
	targetQueued   = 50 * time.Millisecond
)

const (
	ns = "admin"
	// pushRepo is built by the trigger, manualRepo by hand, hookRepo by
	// the direct webhook deliveries (cancelled at once).
	pushRepo, manualRepo, hookRepo = "bench-push", "bench-manual", "bench-hook"
	// pollEvery is the manifest polling interval, the resolution of the
	// end-to-end times.
	pollEvery = 25 * time.Millisecond
	// buildTimeout bounds one build on either side.
	buildTimeout = 5 * time.Minute
)

func main() {
	bin := flag.String("bin", "", "berth binary (default: $BERTH_BIN, or bin/berth at the module root)")
	rounds := flag.Int("n", 3, "pushes measured on each side")
	hooks := flag.Int("hooks", 20, "direct webhook deliveries measured")
	workerUser := flag.String("user", "berth-bench", "the unprivileged user (made when missing) that runs the manual baseline")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *rounds, *hooks, *workerUser); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// bench is the running environment.
type bench struct {
	srv    *harness.Server
	client *harness.Client
	http   *http.Client
	creds  string
	work   string
	// gitRoot is what git daemon exports; bare is the repository under it,
	// clone the working copy commits are made in.
	gitRoot, bare, clone string
	daemonURL            string // git://127.0.0.1:port/repo.git
	workerUser           string
	uid, gid             int
	base                 string
}

func run(ctx context.Context, bin string, rounds, hooks int, workerUser string) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the worker and the baseline run as the unprivileged worker user")
	}
	if rounds < 1 || hooks < 1 {
		return errors.New("-n and -hooks must be at least 1")
	}
	if err := harness.RequireTools("git", "curl", "buildah", "skopeo", "runuser"); err != nil {
		return err
	}
	if bin == "" {
		var err error
		if bin, err = harness.BerthBinary(); err != nil {
			return fmt.Errorf("%w; pass -bin", err)
		}
	}
	work, err := os.MkdirTemp("", "berth-triggerbench-")
	if err != nil {
		return err
	}
	defer harness.RemoveAll(work)
	// The baseline's directories live below; the worker user must reach them.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	b := &bench{work: work, workerUser: workerUser, http: &http.Client{Timeout: 30 * time.Second}}
	b.srv, err = harness.StartServer(ctx, harness.ServerOptions{
		Bin: bin, Dir: filepath.Join(work, "server"), Config: harness.BuildManagerConfig(2, buildTimeout) + harness.LoopbackEgressConfig,
		User: ns, Password: harness.RandomHex(16),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := b.srv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: stopping berth: %v\n", err)
		}
	}()
	b.creds = b.srv.Creds()
	b.client = harness.NewClient(b.srv)
	wu, err := buildhost.EnsureUser(workerUser, "/etc/subuid", "/etc/subgid")
	if err != nil {
		return err
	}
	b.uid, b.gid = wu.UID, wu.GID

	tools, err := harness.NewTools(filepath.Join(work, "tools"))
	if err != nil {
		return err
	}
	b.base = b.srv.Ref(ns + "/base:latest")
	if err := tools.PushBusybox(ctx, b.base, b.creds); err != nil {
		return fmt.Errorf("pushing the base image: %w", err)
	}
	for _, r := range []string{pushRepo, manualRepo, hookRepo} {
		if err := b.client.CreateRepo(ctx, ns, r); err != nil {
			return err
		}
	}
	stopDaemon, err := b.startGit(ctx)
	if err != nil {
		return err
	}
	defer stopDaemon()
	pushTrigger, pushHook, err := b.createTrigger(ctx, pushRepo)
	if err != nil {
		return err
	}
	results := filepath.Join(work, "hook-results")
	hook := postReceiveHook(results, pushHook)
	if err := os.WriteFile(filepath.Join(b.bare, "hooks", "post-receive"), []byte(hook), 0o755); err != nil {
		return err
	}

	fmt.Printf("== triggers: git push → pullable vs git clone + buildah bud + push as %s, same commit, %d rounds ==\n", workerUser, rounds)
	var pushT, manualT []time.Duration
	var sha string
	for i := range rounds {
		sha, err = b.commit(ctx, i)
		if err != nil {
			return err
		}
		p, phases, err := b.pushRound(ctx, pushTrigger, results, sha)
		if err != nil {
			return fmt.Errorf("round %d, git push: %w", i+1, err)
		}
		m, err := b.manualRound(ctx, sha, i)
		if err != nil {
			return fmt.Errorf("round %d, manual: %w", i+1, err)
		}
		pushT, manualT = append(pushT, p), append(manualT, m)
		fmt.Printf("  round %d (%s): berth %8s   manual %8s   berth phases: %s\n", i+1, sha[:7], harness.Round(p), harness.Round(m), phases)
	}

	hookTrigger, hookURL, err := b.createTrigger(ctx, hookRepo)
	if err != nil {
		return err
	}
	queued, err := b.webhookLatency(ctx, hookTrigger, hookURL, sha, hooks)
	if err != nil {
		return fmt.Errorf("webhook → queued: %w", err)
	}

	bp, mp := percentile(pushT, 50), percentile(manualT, 50)
	ratio := float64(bp) / float64(mp)
	overhead := bp - mp
	q50, q90 := percentile(queued, 50), percentile(queued, 90)
	fmt.Println()
	fmt.Printf("%-44s %10s   %s\n", "measure", "value", "target")
	fmt.Printf("%-44s %10s\n", "berth: git push → image pullable, p50", harness.Round(bp))
	fmt.Printf("%-44s %10s\n", "manual: clone + bud + push → pullable, p50", harness.Round(mp))
	fmt.Printf("%-44s %10.2f   ≤ %.1f or overhead ≤ %s: %s\n", "ratio berth / manual", ratio, targetRatio, targetOverhead,
		verdict(ratio <= targetRatio || overhead <= targetOverhead))
	fmt.Printf("%-44s %10s\n", "overhead berth − manual", harness.Round(overhead))
	fmt.Printf("%-44s %10s   p50 < %s: %s\n", fmt.Sprintf("webhook receipt → build queued, p50 (n=%d)", len(queued)), harness.Round(q50),
		targetQueued, verdict(q50 < targetQueued))
	fmt.Printf("%-44s %10s\n", "webhook receipt → build queued, p90", harness.Round(q90))
	return nil
}

// startGit creates the bare repository and its working clone and serves
// the bare one with git daemon; the returned func stops the daemon.
func (b *bench) startGit(ctx context.Context) (func(), error) {
	b.gitRoot = filepath.Join(b.work, "git")
	b.bare = filepath.Join(b.gitRoot, "repo.git")
	b.clone = filepath.Join(b.work, "clone")
	if _, err := b.git(ctx, b.work, "init", "--quiet", "--bare", "--initial-branch=main", b.bare); err != nil {
		return nil, err
	}
	if _, err := b.git(ctx, b.work, "init", "--quiet", "--initial-branch=main", b.clone); err != nil {
		return nil, err
	}
	if _, err := b.git(ctx, b.clone, "remote", "add", "origin", b.bare); err != nil {
		return nil, err
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
		"--base-path="+b.gitRoot, "--listen=127.0.0.1", "--port="+port, b.gitRoot)
	cmd.Env = gitEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own group: the daemon forks a child per connection.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting git daemon: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("git daemon exited before listening:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("git daemon is not listening on %s:\n%s", addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.daemonURL = "git://" + addr + "/repo.git"
	return stop, nil
}

// commit writes a Dockerfile that differs in every round and commits it;
// it returns the commit's SHA.
func (b *bench) commit(ctx context.Context, i int) (string, error) {
	dockerfile := fmt.Sprintf("FROM %s\nRUN echo round-%d-%s > /out\n", b.base, i, harness.RandomHex(4))
	if err := os.WriteFile(filepath.Join(b.clone, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	if _, err := b.git(ctx, b.clone, "add", "--all"); err != nil {
		return "", err
	}
	if _, err := b.git(ctx, b.clone, "commit", "--quiet", "--message", fmt.Sprintf("bench round %d", i+1)); err != nil {
		return "", err
	}
	return b.git(ctx, b.clone, "rev-parse", "HEAD")
}

// pushRound times `git push` (whose post-receive hook delivers the
// webhook) until the short-SHA tag is pullable, then waits, untimed, for
// the build to end so that its worker is gone before the baseline runs. It
// also returns when each of the build's phases began, relative to the push
// (where the time goes).
func (b *bench) pushRound(ctx context.Context, triggerID, results, sha string) (time.Duration, string, error) {
	token, err := b.pullToken(ctx, pushRepo)
	if err != nil {
		return 0, "", err
	}
	start := time.Now()
	if _, err := b.git(ctx, b.clone, "push", "--quiet", "origin", "main"); err != nil {
		return 0, "", err
	}
	pushed := time.Since(start)
	if err := b.waitManifest(ctx, token, pushRepo, sha[:7]); err != nil {
		return 0, "", err
	}
	took := time.Since(start)
	data, err := os.ReadFile(results)
	if err != nil {
		return 0, "", fmt.Errorf("the post-receive hook wrote no result: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if last := lines[len(lines)-1]; last != "200" {
		return 0, "", fmt.Errorf("the post-receive hook's delivery answered %q, want 200", last)
	}
	ds, err := b.deliveries(ctx, pushRepo, triggerID)
	if err != nil {
		return 0, "", err
	}
	if len(ds) == 0 || ds[0].Status != "accepted" || ds[0].BuildID == "" {
		return 0, "", fmt.Errorf("newest delivery %+v is not an accepted build", ds)
	}
	if err := b.waitBuild(ctx, pushRepo, ds[0].BuildID, "complete"); err != nil {
		return 0, "", err
	}
	entries, err := b.client.Logs(ctx, ns+"/"+pushRepo, ds[0].BuildID, 0)
	if err != nil {
		return 0, "", err
	}
	phases := []string{fmt.Sprintf("push returned +%.2fs", pushed.Seconds())}
	for _, e := range entries {
		if at := e.Time(); e.Type == "phase" && !at.IsZero() {
			phases = append(phases, fmt.Sprintf("%s +%.2fs", e.Message, at.Sub(start).Seconds()))
		}
	}
	return took, strings.Join(phases, ", "), nil
}

// manualRound times what the worker does, by hand, as the worker user:
// clone the commit from git daemon, buildah bud with a fresh vfs storage
// root, buildah push to berth, until the tag is pullable.
func (b *bench) manualRound(ctx context.Context, sha string, i int) (time.Duration, error) {
	dir := filepath.Join(b.work, fmt.Sprintf("manual-%d", i))
	for _, d := range []string{dir, filepath.Join(dir, "home"), filepath.Join(dir, "run"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return 0, err
		}
		if err := os.Chown(d, b.uid, b.gid); err != nil {
			return 0, err
		}
	}
	src := filepath.Join(dir, "src")
	ref := fmt.Sprintf("%s/%s/%s:%s", b.srv.Addr, ns, manualRepo, sha[:7])
	storage := []string{"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run", "storage"), "--storage-driver", "vfs"}
	steps := [][]string{
		{"git", "clone", "--quiet", "--branch", "main", b.daemonURL, src},
		slices.Concat([]string{"buildah"}, storage, []string{"bud", "--isolation", "chroot", "--tls-verify=false", "--creds", b.creds,
			"-f", filepath.Join(src, "Dockerfile"), "-t", ref, src}),
		slices.Concat([]string{"buildah"}, storage, []string{"push", "--tls-verify=false", "--creds", b.creds, ref, "docker://" + ref}),
	}
	token, err := b.pullToken(ctx, manualRepo)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for _, s := range steps {
		if err := b.asWorker(ctx, dir, s...); err != nil {
			return 0, err
		}
	}
	if err := b.waitManifest(ctx, token, manualRepo, sha[:7]); err != nil {
		return 0, err
	}
	took := time.Since(start)
	// Untimed: the clone must have built the pushed commit.
	head, err := b.git(ctx, src, "-c", "safe.directory=*", "rev-parse", "HEAD")
	if err != nil {
		return 0, err
	}
	if head != sha {
		return 0, fmt.Errorf("the manual clone is at %s, want %s", head, sha)
	}
	if err := harness.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "bench: removing %s: %v\n", dir, err)
	}
	return took, nil
}

// asWorker runs a program as the worker user in a clean environment whose
// home, runtime and temporary directories are under dir.
func (b *bench) asWorker(ctx context.Context, dir string, args ...string) error {
	full := slices.Concat([]string{"-u", b.workerUser, "--", "env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(dir, "home"), "XDG_RUNTIME_DIR=" + filepath.Join(dir, "run"),
		"TMPDIR=" + filepath.Join(dir, "tmp"), "BUILDAH_ISOLATION=chroot", "GIT_CONFIG_NOSYSTEM=1"}, args)
	cmd := exec.CommandContext(ctx, "runuser", full...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", args[0], args[1], err, strings.ReplaceAll(string(out), b.creds, "***"))
	}
	return nil
}

// webhookLatency POSTs the custom-git payload n times with distinct
// X-Berth-Delivery ids (and bodies: berth skips a body it received before
// as a replay) and measures each POST from send to answer: berth
// answers after the build row is recorded and enqueued, so that is an
// upper bound of receipt → queued. Each build is cancelled and waited for
// before the next delivery, so that no worker competes with it.
func (b *bench) webhookLatency(ctx context.Context, triggerID, hookURL, sha string, n int) ([]time.Duration, error) {
	run := harness.RandomHex(4)
	var out []time.Duration
	for j := range n {
		id := fmt.Sprintf("bench-%s-%d", run, j)
		payload := fmt.Sprintf(`{"commit": %q, "ref": "refs/heads/main", "default_branch": "main", "bench_delivery": %q}`, sha, id)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, hookURL, strings.NewReader(payload))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Berth-Delivery", id)
		start := time.Now()
		resp, err := b.http.Do(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("delivery %s: %d %s", id, resp.StatusCode, body)
		}
		ds, err := b.deliveries(ctx, hookRepo, triggerID)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(ds, func(d delivery) bool { return d.ID == id })
		if i < 0 || ds[i].Status != "accepted" || ds[i].BuildID == "" {
			return nil, fmt.Errorf("delivery %s is not recorded as an accepted build: %+v", id, ds)
		}
		// The build row exists once the answer arrived.
		if _, err := b.client.GetBuild(ctx, ns+"/"+hookRepo, ds[i].BuildID); err != nil {
			return nil, fmt.Errorf("delivery %s answered before its build exists: %w", id, err)
		}
		out = append(out, took)
		if err := b.client.Cancel(ctx, ns+"/"+hookRepo, ds[i].BuildID); err != nil {
			return nil, err
		}
		if err := b.waitBuild(ctx, hookRepo, ds[i].BuildID, "cancelled"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ---- berth's APIs ----

// createTrigger creates a custom-git trigger on ns/repo cloning from git
// daemon and tagging the short SHA only, and returns its id and webhook
// URL (http://$token:<secret>@host/webhooks/push/trigger/<id>).
func (b *bench) createTrigger(ctx context.Context, repo string) (id, hookURL string, err error) {
	body := map[string]any{"service": "custom-git", "config": map[string]any{
		"build_source":              b.daemonURL,
		"dockerfile_path":           "/Dockerfile",
		"context":                   "/",
		"tag_templates":             []string{"${commit_info.short_sha}"},
		"default_tag_from_ref":      false,
		"latest_for_default_branch": false,
	}}
	var v struct {
		ID       string `json:"id"`
		IsActive bool   `json:"is_active"`
		Config   struct {
			Credentials []struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"credentials"`
		} `json:"config"`
	}
	if err := b.api(ctx, http.MethodPost, "/api/v1/repository/"+ns+"/"+repo+"/trigger/", body, http.StatusCreated, &v); err != nil {
		return "", "", fmt.Errorf("creating the trigger: %w", err)
	}
	if v.ID == "" || !v.IsActive {
		return "", "", fmt.Errorf("created trigger %+v is not active", v)
	}
	for _, c := range v.Config.Credentials {
		if c.Name == "Webhook Endpoint URL" {
			return v.ID, c.Value, nil
		}
	}
	return "", "", fmt.Errorf("trigger %s has no webhook URL credential", v.ID)
}

// delivery is one entry of GET …/trigger/{id}/deliveries.
type delivery struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	BuildID string `json:"build_id"`
}

// deliveries lists a trigger's newest deliveries, newest first.
func (b *bench) deliveries(ctx context.Context, repo, triggerID string) ([]delivery, error) {
	var out struct {
		Deliveries []delivery `json:"deliveries"`
	}
	err := b.api(ctx, http.MethodGet, "/api/v1/repository/"+ns+"/"+repo+"/trigger/"+triggerID+"/deliveries?limit=5", nil, http.StatusOK, &out)
	return out.Deliveries, err
}

// waitBuild polls a build until it ends and fails unless it ended in want.
func (b *bench) waitBuild(ctx context.Context, repo, id, want string) error {
	deadline := time.Now().Add(buildTimeout)
	for {
		bd, err := b.client.GetBuild(ctx, ns+"/"+repo, id)
		if err != nil {
			return err
		}
		if store.BuildPhase(bd.Phase).TerminalView() {
			if bd.Phase != want {
				msg := ""
				if bd.Error != nil {
					msg = *bd.Error
				}
				return fmt.Errorf("build %s ended %s (%s), want %s\n%s", id, bd.Phase, msg, want, b.srv.Tail(30))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("build %s still %s after %s", id, bd.Phase, buildTimeout)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// api calls berth's REST API as the admin.
func (b *bench) api(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.srv.URL(path), rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth(b.srv.Opts.User, b.srv.Opts.Password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding %q: %w", method, path, data, err)
		}
	}
	return nil
}

// pullToken gets a bearer token to pull ns/repo, so that polling does not
// pay for a password check on every request.
func (b *bench) pullToken(ctx context.Context, repo string) (string, error) {
	q := url.Values{"service": {b.srv.Addr}, "scope": {"repository:" + ns + "/" + repo + ":pull"}}
	var out struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := b.api(ctx, http.MethodGet, "/v2/auth?"+q.Encode(), nil, http.StatusOK, &out); err != nil {
		return "", fmt.Errorf("pull token: %w", err)
	}
	if out.Token != "" {
		return out.Token, nil
	}
	if out.AccessToken == "" {
		return "", errors.New("pull token: the answer holds no token")
	}
	return out.AccessToken, nil
}

// manifestTypes are what a puller accepts.
var manifestTypes = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// waitManifest polls GET /v2/ns/repo/manifests/tag until it answers 200.
func (b *bench) waitManifest(ctx context.Context, token, repo, tag string) error {
	u := b.srv.URL("/v2/" + ns + "/" + repo + "/manifests/" + tag)
	deadline := time.Now().Add(buildTimeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", manifestTypes)
		resp, err := b.http.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			return nil
		case http.StatusNotFound:
		default:
			return fmt.Errorf("GET %s: %d", u, resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/%s:%s not pullable after %s\n%s", ns, repo, tag, buildTimeout, b.srv.Tail(30))
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return err
		}
	}
}

// ---- git ----

// postReceiveHook is a bare repository's post-receive hook that POSTs the
// custom-git payload of every updated branch to hookURL with curl and
// appends the HTTP status to results.
func postReceiveHook(results, hookURL string) string {
	// Single quotes: the URL's "$token" user must reach curl as is.
	return `#!/bin/sh
while read old new ref; do
	case "$new" in 0000000000000000000000000000000000000000) continue ;; esac
	printf '{"commit": "%s", "ref": "%s", "default_branch": "main"}' "$new" "$ref" |
		curl -s -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' \
			--data-binary @- '` + hookURL + `' >> '` + results + `'
done
`
}

// gitEnv isolates git from the machine's configuration and gives commits a
// fixed identity.
func gitEnv() []string {
	return append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Berth Bench", "GIT_AUTHOR_EMAIL=bench@berth.invalid",
		"GIT_COMMITTER_NAME=Berth Bench", "GIT_COMMITTER_EMAIL=bench@berth.invalid")
}

// git runs git in dir and returns its trimmed standard output.
func (b *bench) git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir, cmd.Env = dir, gitEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, strings.ReplaceAll(stderr.String(), b.creds, "***"))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// ---- helpers ----

// percentile is the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}
