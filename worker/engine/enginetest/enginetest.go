// Package enginetest is the suite every build engine passes, against a real
// registry (distribution's, with authentication) holding a busybox base
// image: a multi-stage build with ARG, RUN, COPY, build arguments, labels
// and a target pushed to two tags and pulled back; a syntax error; a
// failing RUN; a missing base image; cancellation; and a build whose RUN
// step finds neither its build arguments on any command line nor the
// registry credentials on disk.
package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/worker/engine"
)

// Log records what an engine wrote to its sink.
type Log struct {
	mu    sync.Mutex
	lines []Line
	// notify, when set, is called with every line as it arrives.
	notify func(Line)
}

// Line is one recorded log line.
type Line struct {
	Type    engine.LineType
	Message string
}

// Log implements engine.LogSink.
func (l *Log) Log(t engine.LineType, m string) {
	l.mu.Lock()
	l.lines = append(l.lines, Line{t, m})
	notify := l.notify
	l.mu.Unlock()
	if notify != nil {
		notify(Line{t, m})
	}
}

// Lines returns a copy of what was recorded.
func (l *Log) Lines() []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// Text returns every recorded message, one per line.
func (l *Log) Text() string {
	var b strings.Builder
	for _, x := range l.Lines() {
		b.WriteString(x.Message)
		b.WriteByte('\n')
	}
	return b.String()
}

// env is the suite's shared registry and base image.
type env struct {
	reg  *testenv.Registry
	base string
	// other is the base under another name, which the build copies from
	// (COPY --from): a base image the engine pulls like the FROM ones.
	other string
}

// Run runs the suite against the engine newEngine returns.
func Run(t *testing.T, newEngine func(t *testing.T) engine.Engine) {
	testenv.RequireTools(t, "buildah", "skopeo")
	creds := testenv.Creds{Username: "builder", Password: "b3rth-test"}
	e := &env{reg: testenv.StartDistributionAuth(t, creds)}
	e.base = testenv.BusyboxImage(t, e.reg.Host, "lib/busybox", creds)
	e.other = e.reg.Host + "/lib/tools:copy"
	testenv.CopyImage(t, e.base, e.other, creds)

	t.Run("BuildPushPull", func(t *testing.T) { e.buildPushPull(t, newEngine(t)) })
	t.Run("SyntaxError", func(t *testing.T) { e.syntaxError(t, newEngine(t)) })
	t.Run("FailingRun", func(t *testing.T) { e.failingRun(t, newEngine(t)) })
	t.Run("MissingBase", func(t *testing.T) { e.missingBase(t, newEngine(t)) })
	t.Run("Cancel", func(t *testing.T) { e.cancel(t, newEngine(t)) })
	t.Run("SecretsOutOfReach", func(t *testing.T) { e.secretsOutOfReach(t, newEngine(t)) })
}

// request prepares a build of dockerfile with the given context files in
// fresh directories.
func (e *env) request(t *testing.T, dockerfile string, files map[string]string, tags ...string) engine.Request {
	t.Helper()
	dir := t.TempDir()
	ctxDir := filepath.Join(dir, "context")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	files["Dockerfile"] = dockerfile
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	full := make([]string, len(tags))
	for i, tag := range tags {
		full[i] = e.reg.Host + "/" + tag
	}
	return engine.Request{
		ContextDir:     ctxDir,
		DockerfilePath: filepath.Join(ctxDir, "Dockerfile"),
		Tags:           full,
		Registry: engine.Registry{
			Host: e.reg.Host, Username: e.reg.Creds.Username, Password: e.reg.Creds.Password, Insecure: true,
		},
		StorageRoot: filepath.Join(dir, "storage"),
		RunRoot:     filepath.Join(dir, "run"),
		WorkDir:     filepath.Join(dir, "work"),
		BaseImages:  []string{e.base},
	}
}

func mkdirs(t *testing.T, req engine.Request) {
	t.Helper()
	if err := os.MkdirAll(req.WorkDir, 0o700); err != nil {
		t.Fatal(err)
	}
}

const multiStage = `ARG BASE
FROM ${BASE} AS base
ARG GREETING=hello
RUN mkdir -p /out && echo "$GREETING from run" > /out/run.txt
COPY payload.txt /out/payload.txt

FROM base AS final
ARG GREETING
RUN echo "final $GREETING" > /out/final.txt
COPY --from=OTHER /etc/passwd /out/passwd-from-other

FROM base AS after
RUN echo this stage is after the target && exit 9
`

func (e *env) buildPushPull(t *testing.T, eng engine.Engine) {
	req := e.request(t, strings.Replace(multiStage, "OTHER", e.other, 1), map[string]string{"payload.txt": "copied payload\n"}, "test/app:v1", "test/app:v2")
	req.BaseImages = []string{e.base, e.other}
	mkdirs(t, req)
	req.BuildArgs = map[string]string{"BASE": e.base, "GREETING": "bonjour"}
	req.Labels = map[string]string{"org.berth.test": "suite"}
	req.Target = "final"
	var phases []engine.Phase
	req.OnPhase = func(_ context.Context, p engine.Phase) error {
		phases = append(phases, p)
		return nil
	}
	log := &Log{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := eng.Build(ctx, req, log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.Text())
	}
	if want := []engine.Phase{engine.PhasePulling, engine.PhaseBuilding, engine.PhasePushing}; !slices.Equal(phases, want) {
		t.Errorf("phases = %v, want %v", phases, want)
	}
	if len(res.Digests) != 2 {
		t.Fatalf("digests = %v, want one per tag", res.Digests)
	}
	for _, tag := range req.Tags {
		if d := res.Digests[tag]; !strings.HasPrefix(d, "sha256:") || len(d) != 71 {
			t.Errorf("digest of %s = %q", tag, d)
		}
	}
	if res.Digests[req.Tags[0]] != res.Digests[req.Tags[1]] {
		t.Errorf("tags of one build have different digests: %v", res.Digests)
	}
	commands := 0
	for _, l := range log.Lines() {
		if l.Type == engine.LineCommand {
			commands++
			if !strings.Contains(l.Message, "/") {
				t.Errorf("command line %q has no step number", l.Message)
			}
		}
	}
	if commands < 4 {
		t.Errorf("%d command lines, want a step header per instruction:\n%s", commands, log.Text())
	}

	// The pushed image, pulled back by digest, holds what the Dockerfile wrote.
	ref := req.Tags[1][:strings.LastIndex(req.Tags[1], ":")] + "@" + res.Digests[req.Tags[1]]
	rootfs := testenv.ExtractImage(t, ref, e.reg.Creds)
	for name, want := range map[string]string{
		"out/run.txt":     "bonjour from run\n",
		"out/payload.txt": "copied payload\n",
		"out/final.txt":   "final bonjour\n",
		// testenv's busybox image has this passwd.
		"out/passwd-from-other": "root:x:0:0:root:/:/bin/sh\n",
	} {
		got, err := os.ReadFile(filepath.Join(rootfs, name))
		if err != nil || string(got) != want {
			t.Errorf("/%s in the image = %q, %v; want %q", name, got, err, want)
		}
	}
	var cfg struct {
		Config struct {
			Labels map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if err := json.Unmarshal(testenv.Config(t, req.Tags[0], e.reg.Creds), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Labels["org.berth.test"] != "suite" {
		t.Errorf("labels = %v, want org.berth.test=suite", cfg.Config.Labels)
	}
}

func (e *env) syntaxError(t *testing.T, eng engine.Engine) {
	req := e.request(t, "FROM "+e.base+"\nRUN true\nFRUM nothing\n", map[string]string{}, "test/bad:latest")
	mkdirs(t, req)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := eng.Build(ctx, req, &Log{})
	ue, ok := engine.AsUserError(err)
	if !ok || ue.Code != engine.CodeDockerfile {
		t.Fatalf("err = %v, want a dockerfile user error", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a syntax error took %v to report", d)
	}
}

func (e *env) failingRun(t *testing.T, eng engine.Engine) {
	df := "FROM " + e.base + "\nRUN echo about to fail && exit 3\nRUN echo never\n"
	req := e.request(t, df, map[string]string{}, "test/fail:latest")
	mkdirs(t, req)
	var failedAt time.Time
	log := &Log{notify: func(l Line) {
		if strings.Contains(l.Message, "about to fail") && !strings.Contains(l.Message, "RUN") {
			failedAt = time.Now()
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := eng.Build(ctx, req, log)
	ue, ok := engine.AsUserError(err)
	if !ok || ue.Code != engine.CodeBuildStep {
		t.Fatalf("err = %v, want a build-step user error\n%s", err, log.Text())
	}
	if !strings.Contains(ue.Message, "exit status 3") {
		t.Errorf("message %q does not give the exit status", ue.Message)
	}
	if failedAt.IsZero() {
		t.Fatalf("the step's output is not in the log:\n%s", log.Text())
	}
	if d := time.Since(failedAt); d > 5*time.Second {
		t.Errorf("the failure was reported %v after the step failed", d)
	}
	if strings.Contains(log.Text(), "\nnever\n") {
		t.Error("the build went on after the failing step")
	}
}

func (e *env) missingBase(t *testing.T, eng engine.Engine) {
	missing := e.reg.Host + "/lib/does-not-exist:1"
	req := e.request(t, "FROM "+missing+"\nRUN true\n", map[string]string{}, "test/nobase:latest")
	req.BaseImages = []string{missing}
	req.Registry.PullRobot = "myorg+puller"
	mkdirs(t, req)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := eng.Build(ctx, req, &Log{})
	ue, ok := engine.AsUserError(err)
	if !ok || ue.Code != engine.CodeBaseImage {
		t.Fatalf("err = %v, want a base-image user error", err)
	}
	if !strings.Contains(ue.Message, missing) || !strings.Contains(ue.Message, "myorg+puller") {
		t.Errorf("message %q names neither the image nor the pull robot", ue.Message)
	}
}

func (e *env) cancel(t *testing.T, eng engine.Engine) {
	// A number no other process on the machine is likely to carry.
	marker := strconv.Itoa(40000 + os.Getpid()%20000)
	df := "FROM " + e.base + "\nRUN echo sleeping && sleep " + marker + "\n"
	req := e.request(t, df, map[string]string{}, "test/cancel:latest")
	mkdirs(t, req)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := &Log{notify: func(l Line) {
		if l.Message == "sleeping" {
			// Give the sleep a moment to start, then cancel.
			time.AfterFunc(300*time.Millisecond, cancel)
		}
	}}
	done := make(chan error, 1)
	go func() {
		_, err := eng.Build(ctx, req, log)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("Build did not return after cancel\n%s", log.Text())
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled\n%s", err, log.Text())
	}
	// No process of the build is left: neither the RUN nor buildah.
	if pids := processesMatching(t, "sleep "+marker, req.StorageRoot); len(pids) > 0 {
		t.Errorf("processes left after cancel: %v", pids)
	}
}

// secretsOutOfReach builds with a secret build argument and checks, while
// a RUN step runs, that no process on the machine carries the value or the
// registry password on its command line and that no file of the build's
// work directory holds the password; afterwards, that the value reached the
// RUN step and that the log never shows it.
func (e *env) secretsOutOfReach(t *testing.T, eng engine.Engine) {
	secret := "s3cr3t-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + ` 'q' "d" $HOME`
	df := "FROM " + e.base + "\nARG NPM_TOKEN\nARG OTHER=default\n" +
		"RUN echo step-running && sleep 2 && mkdir -p /out && printf %s \"$NPM_TOKEN\" > /out/token\n"
	req := e.request(t, df, map[string]string{}, "test/secret:latest")
	req.BuildArgs = map[string]string{"NPM_TOKEN": secret}
	mkdirs(t, req)
	checked := make(chan []string, 1)
	log := &Log{notify: func(l Line) {
		if l.Message != "step-running" {
			return
		}
		var leaks []string
		for _, p := range processesMatching(t, secret, e.reg.Creds.Password) {
			leaks = append(leaks, "command line: "+p)
		}
		_ = filepath.WalkDir(req.WorkDir, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), e.reg.Creds.Password) {
				leaks = append(leaks, "file: "+path)
			}
			return nil
		})
		checked <- leaks
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := eng.Build(ctx, req, log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.Text())
	}
	select {
	case leaks := <-checked:
		for _, l := range leaks {
			t.Errorf("while a RUN step ran, a secret was within reach: %s", l)
		}
	default:
		t.Fatalf("the RUN step's output never arrived:\n%s", log.Text())
	}
	if strings.Contains(log.Text(), "s3cr3t-") {
		t.Errorf("the log shows the build argument's value:\n%s", log.Text())
	}
	if !strings.Contains(log.Text(), "ARG NPM_TOKEN") {
		t.Errorf("the log does not show the ARG step as written:\n%s", log.Text())
	}
	ref := req.Tags[0][:strings.LastIndex(req.Tags[0], ":")] + "@" + res.Digests[req.Tags[0]]
	rootfs := testenv.ExtractImage(t, ref, e.reg.Creds)
	if got, err := os.ReadFile(filepath.Join(rootfs, "out/token")); err != nil || string(got) != secret {
		t.Errorf("the RUN step saw NPM_TOKEN = %q (%v), want %q", got, err, secret)
	}
}

// processesMatching lists the processes whose command line contains any
// of the strings.
func processesMatching(t *testing.T, subs ...string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		for _, s := range subs {
			if strings.Contains(cmdline, s) {
				found = append(found, e.Name()+": "+cmdline)
				break
			}
		}
	}
	return found
}
