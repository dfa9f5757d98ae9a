package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for `berth serve`: started with
// REGBENCH_FAKE_BERTH=1 it serves a token-auth fake registry the way the
// benchmark expects berth to, so the start-berth path is tested before
// berth exists.
func TestMain(m *testing.M) {
	if os.Getenv("REGBENCH_FAKE_BERTH") == "1" {
		os.Exit(serveFakeBerth(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func serveFakeBerth(args []string) int {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(os.Stderr, "fake berth: want `serve`, got", args)
		return 2
	}
	fs := flag.NewFlagSet("berth serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "")
	dataDir := fs.String("data-dir", "", "")
	if err := fs.Parse(args[1:]); err != nil || *listen == "" || *dataDir == "" {
		fmt.Fprintln(os.Stderr, "fake berth: need --listen and --data-dir")
		return 2
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "fake berth:", err)
		return 1
	}
	user, pass := os.Getenv("BERTH_ADMIN_USER"), os.Getenv("BERTH_ADMIN_PASSWORD")
	if user == "" || pass == "" {
		fmt.Fprintln(os.Stderr, "fake berth: BERTH_ADMIN_USER and BERTH_ADMIN_PASSWORD must be set")
		return 2
	}
	f := newFakeRegistry(user, pass)
	f.base = "http://" + *listen
	fmt.Fprintln(os.Stderr, "fake berth:", http.ListenAndServe(*listen, f))
	return 1
}

func startFake(t *testing.T, user, pass string) (*fakeRegistry, *httptest.Server) {
	t.Helper()
	f := newFakeRegistry(user, pass)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.base = srv.URL
	return f, srv
}

func checkReport(t *testing.T, rep *report, cfg *config, progress string) {
	t.Helper()
	for i, s := range rep.sides {
		if s.pushMBps <= 0 || s.pullMBps <= 0 {
			t.Errorf("side %d: push %.1f / pull %.1f MB/s, want both > 0", i, s.pushMBps, s.pullMBps)
		}
		if len(s.gets) != len(cfg.getConcs) {
			t.Fatalf("side %d: %d manifest GET results, want %d", i, len(s.gets), len(cfg.getConcs))
		}
		for k, g := range s.gets {
			if g.conc != cfg.getConcs[k] || g.reqPerS <= 0 || g.p50 <= 0 || g.p99 < g.p50 {
				t.Errorf("side %d: bad manifest GET result %+v", i, g)
			}
		}
		if want := cfg.tags / cfg.tagSegment; len(s.tagRates) != want {
			t.Errorf("side %d: %d tag segments, want %d", i, len(s.tagRates), want)
		}
		if s.list <= 0 || s.walk <= 0 {
			t.Errorf("side %d: list %s, walk %s, want both > 0", i, s.list, s.walk)
		}
	}
	if rep.shaMBps <= 0 || rep.diskMBps <= 0 {
		t.Errorf("ceilings sha %.0f disk %.0f, want > 0", rep.shaMBps, rep.diskMBps)
	}
	var out bytes.Buffer
	printTable(&out, rep)
	if !strings.Contains(progress, out.String()) {
		t.Errorf("run did not print the table; its output:\n%s", progress)
	}
	for _, want := range []string{"blob push (MB/s)", "manifest GET c=16 (req/s)", "tag writes at 250 tags", "tags walk n=100", "PASS, "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// emptyDir fails the test if dir has anything left in it: servers' temp
// dirs and the disk probe must be cleaned up.
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in tmp dir: %s", e.Name())
	}
}

func TestQuickRunStartsBerthAndFollowsTokenAuth(t *testing.T) {
	t.Setenv("REGBENCH_FAKE_BERTH", "1") // read by the child only: TestMain already ran
	dist, srv := startFake(t, "", "")
	tmp := t.TempDir()
	cfg, err := parseFlags([]string{"-quick", "-berth-bin", os.Args[0], "-dist-url", srv.URL, "-tmp-dir", tmp, "-user", "alice", "-password", "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := run(ctx, cfg, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "started berth at http://127.0.0.1:") {
		t.Errorf("progress does not report starting berth:\n%s", out.String())
	}
	checkReport(t, rep, cfg, out.String())

	var tagged int
	dist.mu.Lock()
	defer dist.mu.Unlock()
	for repo, tags := range dist.tags {
		if strings.HasPrefix(repo, "alice/tags-") {
			tagged = len(tags)
		}
	}
	if tagged != cfg.tags {
		t.Errorf("distribution side holds %d tags in alice/tags-*, want %d", tagged, cfg.tags)
	}
	emptyDir(t, tmp)
}

func TestQuickRunDistributionAgainstItself(t *testing.T) {
	bin := os.Getenv("REGBENCH_DIST_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), ".tools", "bin", "registry")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("distribution registry not installed at %s (make bench installs it): %v", bin, err)
	}
	tmp := t.TempDir()
	cfg, err := parseFlags([]string{"-quick", "-berth-kind", "distribution", "-dist-bin", bin, "-tmp-dir", tmp})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := run(ctx, cfg, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	checkReport(t, rep, cfg, out.String())
	if rep.berthLabel != "distribution (as berth)" {
		t.Errorf("berth side labelled %q", rep.berthLabel)
	}
	emptyDir(t, tmp)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

func TestRunReportsMissingBerthBinary(t *testing.T) {
	_, srv := startFake(t, "", "")
	cfg, err := parseFlags([]string{"-quick", "-berth-bin", filepath.Join(t.TempDir(), "nope"), "-dist-url", srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "berth binary") {
		t.Fatalf("run with a missing berth binary: err = %v, want one naming the berth binary", err)
	}
}

func TestStartFailureShowsServerLog(t *testing.T) {
	// The fake berth refuses to start without an admin password; the
	// error must say the server exited and carry its last words.
	t.Setenv("REGBENCH_FAKE_BERTH", "1")
	tmp := t.TempDir()
	_, err := startBerth(context.Background(), os.Args[0], tmp, "u", "", 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before it was healthy") || !strings.Contains(err.Error(), "must be set") {
		t.Fatalf("startBerth of a binary that exits: err = %v", err)
	}
	emptyDir(t, tmp)
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.blobs != 32 || cfg.blobBytes != 16<<20 || cfg.tags != 10000 || cfg.getRequests != 20000 {
		t.Errorf("full sizes wrong: %+v", cfg)
	}
	quick, err := parseFlags([]string{"-quick"})
	if err != nil {
		t.Fatal(err)
	}
	if quick.blobBytes >= cfg.blobBytes || quick.tags >= cfg.tags {
		t.Errorf("-quick did not shrink sizes: %+v", quick)
	}
	if _, err := parseFlags([]string{"-berth-kind", "zot"}); err == nil {
		t.Error("-berth-kind zot accepted")
	}
	if _, err := parseFlags([]string{"extra"}); err == nil {
		t.Error("stray argument accepted")
	}
}

func TestClientTokenAuthAndRefresh(t *testing.T) {
	f, srv := startFake(t, "alice", "pw")
	ctx := context.Background()
	c, err := newClient(srv.URL, "alice", "pw", 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ping(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.needsAuth() {
		t.Fatal("client did not learn the Bearer challenge")
	}
	img, err := makeImage()
	if err != nil {
		t.Fatal(err)
	}
	if err := pushImage(ctx, c, "alice/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	// An expired token must be refreshed and the manifest body replayed.
	f.revokeTokens()
	if err := c.putManifest(ctx, "alice/app", "v2", mediaOCIManifest, img.taggedManifest(nil, "v2")); err != nil {
		t.Fatalf("put after token expiry: %v", err)
	}
	if got := f.tagCount("alice/app"); got != 2 {
		t.Errorf("alice/app has %d tags, want 2", got)
	}
	f.mu.Lock()
	v2 := string(f.manifests["alice/app:v2"])
	f.mu.Unlock()
	if got := v2; !strings.Contains(got, `"dev.berth.regbench.tag":"v2"`) {
		t.Errorf("replayed manifest body is %q", got)
	}
	scopes := f.issuedScopes()
	if len(scopes) != 2 || scopes[0] != "repository:alice/app:pull,push" || scopes[1] != scopes[0] {
		t.Errorf("token scopes %q, want two for repository:alice/app:pull,push", scopes)
	}

	bad, err := newClient(srv.URL, "alice", "wrong", 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bad.pushBlob(ctx, "alice/app", img.configDigest, img.config); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("push with a wrong password: err = %v, want a 401 from the token endpoint", err)
	}
}

func TestWorkloadsDetectBadServers(t *testing.T) {
	f, srv := startFake(t, "", "")
	ctx := context.Background()
	c, err := newClient(srv.URL, "", "", 4)
	if err != nil {
		t.Fatal(err)
	}
	bs := makeBlobs(3, 4096, 7)
	if _, err := pushBlobs(ctx, c, "u/r", bs, 0, 3, 2); err != nil {
		t.Fatal(err)
	}
	// Corrupt one stored blob: the pull must notice.
	f.mu.Lock()
	f.blobs[bs.digests[1]] = bytes.Repeat([]byte{'x'}, 4096)
	f.mu.Unlock()
	_, err = pullBlobs(ctx, c, "u/r", bs, 0, 3, 2, streamBufs(2))
	if err == nil || !strings.Contains(err.Error(), "content hashes to") {
		t.Errorf("pull of a corrupted blob: err = %v", err)
	}

	img, err := makeImage()
	if err != nil {
		t.Fatal(err)
	}
	if err := pushImage(ctx, c, "u/t", "base", img); err != nil {
		t.Fatal(err)
	}
	bufs := make([][]byte, 3)
	if _, err := putTags(ctx, c, "u/t", img, 0, 250, 3, bufs); err != nil {
		t.Fatal(err)
	}
	if _, err := walkTags(ctx, c, "u/t", 100, 251); err != nil {
		t.Errorf("walk of 251 tags: %v", err)
	}
	if _, err := walkTags(ctx, c, "u/t", 100, 300); err == nil {
		t.Error("walk expecting 300 tags of 251 did not fail")
	}
	if _, err := listTags(ctx, c, "u/t", 251); err != nil {
		t.Errorf("list of 251 tags: %v", err)
	}
	if _, err := getManifests(ctx, c, "u/t", "base", 4, make([]time.Duration, 10), len(img.manifest)+1); err == nil {
		t.Error("manifest GET of the wrong length did not fail")
	}
	if _, err := getManifests(ctx, c, "u/t", "missing", 4, make([]time.Duration, 10), len(img.manifest)); err == nil {
		t.Error("manifest GET of a missing tag did not fail")
	}
}

func TestParseChallenge(t *testing.T) {
	scheme, p := parseChallenge(`Bearer realm="http://127.0.0.1:5000/v2/auth",service="berth, registry",scope="repository:a/b:pull,push", error=invalid_token`)
	if scheme != "Bearer" {
		t.Errorf("scheme %q", scheme)
	}
	want := map[string]string{"realm": "http://127.0.0.1:5000/v2/auth", "service": "berth, registry", "scope": "repository:a/b:pull,push", "error": "invalid_token"}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("param %s = %q, want %q", k, p[k], v)
		}
	}
	if _, p := parseChallenge(`Bearer realm="a\"b"`); p["realm"] != `a"b` {
		t.Errorf("escaped quote: realm %q", p["realm"])
	}
	if s, p := parseChallenge("Basic"); s != "Basic" || len(p) != 0 {
		t.Errorf("bare scheme: %q %v", s, p)
	}
}

func TestNextLink(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{`</v2/a/tags/list?last=t1&n=100>; rel="next"`}, "/v2/a/tags/list?last=t1&n=100"},
		{[]string{`<http://x/prev>; rel="prev", <http://x/next>; rel=next`}, "http://x/next"},
		{[]string{`<http://x/prev>; rel="prev"`}, ""},
		{nil, ""},
	}
	for _, c := range cases {
		if got := nextLink(c.in); got != c.want {
			t.Errorf("nextLink(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(ds, 50); got != 50*time.Millisecond {
		t.Errorf("p50 = %s", got)
	}
	if got := percentile(ds, 99); got != 99*time.Millisecond {
		t.Errorf("p99 = %s", got)
	}
	if got := median([]time.Duration{3, 1, 2}); got != 2 {
		t.Errorf("median = %d", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty p50 = %s", got)
	}
}

func TestRowsJudgeTargets(t *testing.T) {
	rep := &report{
		shaMBps: 1000, diskMBps: 400, tags: 10000, tagSegment: 1000, pageSize: 100,
		sides: [2]sideResult{
			{ // berth
				pushMBps: 330, pullMBps: 700,
				gets:     []getResult{{conc: 4, reqPerS: 20000, p50: time.Millisecond, p99: 3 * time.Millisecond}},
				tagRates: []float64{3000, 999},
				list:     5 * time.Millisecond, walk: 80 * time.Millisecond,
			},
			{ // distribution
				pushMBps: 300, pullMBps: 500,
				gets:     []getResult{{conc: 4, reqPerS: 10001, p50: 2 * time.Millisecond, p99: 6 * time.Millisecond}},
				tagRates: []float64{800, 400},
				list:     20 * time.Millisecond, walk: 70 * time.Millisecond,
			},
		},
	}
	got := map[string]row{}
	for _, r := range rep.rows() {
		got[r.workload] = r
	}
	want := map[string]string{
		"blob push (MB/s)":                  "MISS", // 1.1x but under 0.85*400 = 340 MB/s
		"blob pull, sha256-checked (MB/s)":  "PASS", // 1.4x
		"manifest GET c=4 (req/s)":          "MISS", // 1.9998x
		"  p50 latency c=4":                 "",
		"tag writes 0-1000 (tags/s)":        "",
		"tag writes at 10000 tags (tags/s)": "MISS", // 999/s
		"tags/list of 10000 (median)":       "PASS",
		"tags walk n=100 via Link (median)": "MISS",
	}
	for name, v := range want {
		r, ok := got[name]
		if !ok {
			t.Errorf("no row %q", name)
			continue
		}
		if r.verdict != v {
			t.Errorf("%s: verdict %q, want %q (row %+v)", name, r.verdict, v, r)
		}
	}
	if r := got["blob push (MB/s)"]; r.target != ">=1.00x and >=340 MB/s" {
		t.Errorf("push target %q", r.target)
	}
	rep.sides[0].pushMBps = 341
	if r := rep.rows()[0]; r.verdict != "PASS" {
		t.Errorf("push at 341 MB/s: %q", r.verdict)
	}
	rep.sides[1].pushMBps = 0
	if r := rep.rows()[0]; r.verdict != "MISS" {
		t.Errorf("push against a zero distribution figure: %q", r.verdict)
	}
}
