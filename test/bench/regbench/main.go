// Command regbench benchmarks berth's registry against the distribution
// registry side by side: one run, one client, the same workloads
// interleaved between the two servers, and a table of each figure for both
// with the ratio berth/distribution and the target it must meet.
//
// By default it starts both servers itself on free loopback ports with
// fresh temp dirs; -berth-url and -dist-url point it at running ones
// instead. -berth-kind=distribution puts a second distribution registry on
// the berth side, which is how the program is validated on its own.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// config is everything one run needs; sizes come from defaults or -quick.
type config struct {
	berthURL, distURL string
	berthBin, distBin string
	berthKind         string
	user, password    string
	tmpRoot           string
	startTimeout      time.Duration
	blobsOnly         bool

	blobs, blobBytes, blobStreams, blobRounds int
	getRequests, getRounds                    int
	getConcs                                  []int
	tags, tagSegment, tagStreams              int
	listRuns, walkRuns, pageSize              int
	ceilingBytes                              int64
}

// fullSizes are the sizes of `make bench`: about two to three minutes of
// traffic on a 2-core machine.
func fullSizes(c *config) {
	c.blobs, c.blobBytes, c.blobStreams, c.blobRounds = 32, 16<<20, 4, 8
	c.getRequests, c.getRounds, c.getConcs = 20000, 8, []int{4, 16}
	c.tags, c.tagSegment, c.tagStreams = 10000, 1000, 4
	c.listRuns, c.walkRuns, c.pageSize = 20, 5, 100
	c.ceilingBytes = 256 << 20
}

// quickSizes shrink every workload to a smoke run of a few seconds that
// still exercises each code path, pagination included.
func quickSizes(c *config) {
	c.blobs, c.blobBytes, c.blobStreams, c.blobRounds = 4, 1<<20, 4, 2
	c.getRequests, c.getRounds, c.getConcs = 400, 2, []int{4, 16}
	c.tags, c.tagSegment, c.tagStreams = 250, 50, 4
	c.listRuns, c.walkRuns, c.pageSize = 3, 2, 100
	c.ceilingBytes = 16 << 20
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "regbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "regbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("regbench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "shrink every workload to a smoke run of a few seconds")
	fs.StringVar(&cfg.berthURL, "berth-url", "", "benchmark the berth registry already running at this URL instead of starting one")
	fs.StringVar(&cfg.distURL, "dist-url", "", "benchmark the distribution registry already running at this URL instead of starting one")
	fs.StringVar(&cfg.berthBin, "berth-bin", "bin/berth", "berth binary to start")
	fs.StringVar(&cfg.distBin, "dist-bin", ".tools/bin/registry", "distribution registry binary to start")
	fs.StringVar(&cfg.berthKind, "berth-kind", "berth", "what to start on the berth side: berth, or distribution to validate the benchmark against itself")
	fs.StringVar(&cfg.user, "user", "bench", "user to push as on berth; repositories are <user>/<name>")
	fs.StringVar(&cfg.password, "password", os.Getenv("BERTH_ADMIN_PASSWORD"), "password of -user (random when regbench starts berth itself)")
	fs.StringVar(&cfg.tmpRoot, "tmp-dir", os.TempDir(), "where server data dirs and the disk-ceiling probe go")
	fs.DurationVar(&cfg.startTimeout, "start-timeout", 30*time.Second, "how long a started server may take to become healthy")
	fs.BoolVar(&cfg.blobsOnly, "blobs-only", false, "run only the blob push and pull workload (a quick loop while working on the blob path)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if cfg.berthKind != "berth" && cfg.berthKind != "distribution" {
		return nil, fmt.Errorf("-berth-kind must be berth or distribution, not %q", cfg.berthKind)
	}
	fullSizes(cfg)
	if *quick {
		quickSizes(cfg)
	}
	return cfg, nil
}

// sideResult holds one registry's figures.
type sideResult struct {
	pushMBps, pullMBps float64
	gets               []getResult // one per config.getConcs entry
	tagRates           []float64   // tags/s per segment of config.tagSegment tags
	list, walk         time.Duration
}

type getResult struct {
	conc     int
	reqPerS  float64
	p50, p99 time.Duration
}

// report is the outcome of a run: [0] is the berth side, [1] distribution.
type report struct {
	berthLabel string
	sides      [2]sideResult
	shaMBps    float64
	diskMBps   float64
	tags       int
	tagSegment int
	blobsOnly  bool // only the blob workload ran: the table stops after its rows
	pageSize   int
}

// run starts (or connects to) both registries, measures the ceilings and
// every workload, writes progress and the final table to out, and returns
// the figures.
func run(ctx context.Context, cfg *config, out io.Writer) (*report, error) {
	rep := &report{berthLabel: "berth", tags: cfg.tags, tagSegment: cfg.tagSegment, pageSize: cfg.pageSize, blobsOnly: cfg.blobsOnly}
	berthUser, berthPass := cfg.user, cfg.password

	// Servers stop together, after the table is out: removing the data
	// dirs of two 10 000-tag repositories can take a while.
	var started []*server
	defer func() {
		if len(started) == 0 {
			return
		}
		start := time.Now()
		var wg sync.WaitGroup
		for _, s := range started {
			wg.Go(s.stop)
		}
		wg.Wait()
		fmt.Fprintf(out, "-- stopping servers and removing their data took %s\n", time.Since(start).Round(time.Millisecond))
	}()

	berthURL := cfg.berthURL
	if berthURL == "" {
		var (
			s   *server
			err error
		)
		switch cfg.berthKind {
		case "berth":
			bin, ferr := findBinary(cfg.berthBin)
			if ferr != nil {
				return nil, fmt.Errorf("berth binary (build it with `make build`, or pass -berth-bin/-berth-url): %w", ferr)
			}
			if berthPass == "" {
				berthPass = randomHex(16)
			}
			s, err = startBerth(ctx, bin, cfg.tmpRoot, berthUser, berthPass, cfg.startTimeout)
		case "distribution":
			rep.berthLabel = "distribution (as berth)"
			bin, ferr := findBinary(cfg.distBin)
			if ferr != nil {
				return nil, fmt.Errorf("distribution binary: %w", ferr)
			}
			s, err = startDistribution(ctx, bin, cfg.tmpRoot, cfg.startTimeout)
		}
		if err != nil {
			return nil, err
		}
		started = append(started, s)
		berthURL = s.url
		fmt.Fprintf(out, "started %s at %s (data %s)\n", rep.berthLabel, s.url, s.dataDir)
	}

	distURL := cfg.distURL
	if distURL == "" {
		bin, err := findBinary(cfg.distBin)
		if err != nil {
			return nil, fmt.Errorf("distribution binary (install it with `make bench`, or pass -dist-bin/-dist-url): %w", err)
		}
		s, err := startDistribution(ctx, bin, cfg.tmpRoot, cfg.startTimeout)
		if err != nil {
			return nil, err
		}
		started = append(started, s)
		distURL = s.url
		fmt.Fprintf(out, "started distribution at %s (data %s)\n", s.url, s.dataDir)
	}

	maxConc := cfg.blobStreams
	for _, c := range cfg.getConcs {
		maxConc = max(maxConc, c)
	}
	var sides [2]side
	for i, t := range []struct{ name, url, user, pass string }{
		{rep.berthLabel, berthURL, berthUser, berthPass},
		{"distribution", distURL, "", ""},
	} {
		c, err := newClient(t.url, t.user, t.pass, maxConc)
		if err != nil {
			return nil, err
		}
		defer c.close()
		if err := c.ping(ctx); err != nil {
			return nil, err
		}
		if c.needsAuth() {
			fmt.Fprintf(out, "%s asks for token auth (realm %s); pushing as %q\n", t.name, c.realm, t.user)
		}
		sides[i] = side{name: t.name, c: c}
	}

	b := &bench{cfg: cfg, out: out, sides: sides, rep: rep, runID: randomHex(3)}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"ceilings", b.ceilings},
		{"warm-up", b.warmup},
		{"blob push and pull", b.blobs},
		{"manifest GETs", b.manifestGets},
		{"tags", b.tagWorkload},
	}
	if cfg.blobsOnly {
		steps = steps[:3]
	}
	for _, step := range steps {
		start := time.Now()
		if err := step.fn(ctx); err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "-- %s took %s\n", step.name, time.Since(start).Round(time.Millisecond))
	}
	printTable(out, rep)
	return rep, nil
}

// bench carries the state shared by the workload steps of one run.
type bench struct {
	cfg   *config
	out   io.Writer
	sides [2]side
	rep   *report
	runID string
	img   *image
}

// repo names a repository of this run under the benchmark user's
// namespace; the run id keeps reruns against long-lived servers apart.
func (b *bench) repo(name string) string {
	return b.cfg.user + "/" + name + "-" + b.runID
}

func (b *bench) ceilings(context.Context) error {
	b.rep.shaMBps = sha256Ceiling(b.cfg.ceilingBytes)
	disk, err := diskCeiling(b.cfg.tmpRoot, b.cfg.ceilingBytes)
	if err != nil {
		return err
	}
	b.rep.diskMBps = disk
	fmt.Fprintf(b.out, "ceilings: sha256 one core %.0f MB/s, fsync'd write to %s %.0f MB/s\n", b.rep.shaMBps, b.cfg.tmpRoot, disk)
	return nil
}

// warmup opens connections, fetches tokens for every repository the run
// uses (so no measured request pays for one) and runs a little of each
// workload on both sides.
func (b *bench) warmup(ctx context.Context) error {
	img, err := makeImage()
	if err != nil {
		return err
	}
	b.img = img
	warm := makeBlobs(4, 1<<20, 99)
	bufs := streamBufs(b.cfg.blobStreams)
	lat := make([]time.Duration, 200)
	for _, s := range b.sides {
		if s.c.needsAuth() {
			for _, r := range []string{"warmup", "blobs", "manifest", "tags"} {
				if _, err := s.c.token(ctx, b.repo(r)); err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
			}
		}
		repo := b.repo("warmup")
		if _, err := pushBlobs(ctx, s.c, repo, warm, 0, len(warm.data), b.cfg.blobStreams); err != nil {
			return fmt.Errorf("%s warm-up push: %w", s.name, err)
		}
		if _, err := pullBlobs(ctx, s.c, repo, warm, 0, len(warm.data), b.cfg.blobStreams, bufs); err != nil {
			return fmt.Errorf("%s warm-up pull: %w", s.name, err)
		}
		if err := pushImage(ctx, s.c, repo, "warm", img); err != nil {
			return fmt.Errorf("%s warm-up image: %w", s.name, err)
		}
		if _, err := getManifests(ctx, s.c, repo, "warm", 4, lat, len(img.manifest)); err != nil {
			return fmt.Errorf("%s warm-up manifest gets: %w", s.name, err)
		}
	}
	return nil
}

func streamBufs(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 256<<10)
	}
	return bufs
}

// blobs pushes then pulls the blob set, a round at a time on each side in
// alternating order.
func (b *bench) blobs(ctx context.Context) error {
	cfg := b.cfg
	fmt.Fprintf(b.out, "generating %d blobs of %d MiB\n", cfg.blobs, cfg.blobBytes>>20)
	bs := makeBlobs(cfg.blobs, cfg.blobBytes, 1)
	repo := b.repo("blobs")
	per := (cfg.blobs + cfg.blobRounds - 1) / cfg.blobRounds
	var push, pull [2]time.Duration
	for r := range cfg.blobRounds {
		lo, hi := r*per, min((r+1)*per, cfg.blobs)
		for _, i := range order(r) {
			d, err := pushBlobs(ctx, b.sides[i].c, repo, bs, lo, hi, cfg.blobStreams)
			if err != nil {
				return fmt.Errorf("%s push: %w", b.sides[i].name, err)
			}
			push[i] += d
		}
	}
	bufs := streamBufs(cfg.blobStreams)
	for r := range cfg.blobRounds {
		lo, hi := r*per, min((r+1)*per, cfg.blobs)
		for _, i := range order(r + 1) {
			d, err := pullBlobs(ctx, b.sides[i].c, repo, bs, lo, hi, cfg.blobStreams, bufs)
			if err != nil {
				return fmt.Errorf("%s pull: %w", b.sides[i].name, err)
			}
			pull[i] += d
		}
	}
	for i := range b.sides {
		b.rep.sides[i].pushMBps = mbps(bs.bytes, push[i])
		b.rep.sides[i].pullMBps = mbps(bs.bytes, pull[i])
		fmt.Fprintf(b.out, "%-24s push %7.1f MB/s   pull %7.1f MB/s\n", b.sides[i].name, b.rep.sides[i].pushMBps, b.rep.sides[i].pullMBps)
	}
	return nil
}

// manifestGets measures GET of one manifest by tag at each concurrency.
func (b *bench) manifestGets(ctx context.Context) error {
	cfg := b.cfg
	repo := b.repo("manifest")
	for _, s := range b.sides {
		if err := pushImage(ctx, s.c, repo, "latest", b.img); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	for _, conc := range cfg.getConcs {
		per := cfg.getRequests / cfg.getRounds
		var (
			lats  [2][]time.Duration
			walls [2]time.Duration
		)
		for i := range lats {
			lats[i] = make([]time.Duration, per*cfg.getRounds)
		}
		for r := range cfg.getRounds {
			for _, i := range order(r) {
				d, err := getManifests(ctx, b.sides[i].c, repo, "latest", conc, lats[i][r*per:(r+1)*per], len(b.img.manifest))
				if err != nil {
					return fmt.Errorf("%s: %w", b.sides[i].name, err)
				}
				walls[i] += d
			}
		}
		for i := range b.sides {
			g := getResult{
				conc:    conc,
				reqPerS: float64(len(lats[i])) / walls[i].Seconds(),
				p50:     percentile(lats[i], 50),
				p99:     percentile(lats[i], 99),
			}
			b.rep.sides[i].gets = append(b.rep.sides[i].gets, g)
			fmt.Fprintf(b.out, "%-24s manifest GET c=%-2d %8.0f req/s  p50 %s  p99 %s\n", b.sides[i].name, conc, g.reqPerS, fmtDur(g.p50), fmtDur(g.p99))
		}
	}
	return nil
}

// tagWorkload grows one repository per side to cfg.tags tags a segment at
// a time (alternating which side goes first), then times the full tag list
// and a paginated walk.
func (b *bench) tagWorkload(ctx context.Context) error {
	cfg := b.cfg
	repo := b.repo("tags")
	for _, s := range b.sides {
		if err := s.c.pushBlob(ctx, repo, b.img.configDigest, b.img.config); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if err := s.c.pushBlob(ctx, repo, b.img.layerDigest, b.img.layer); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	bufs := make([][]byte, cfg.tagStreams)
	for seg, lo := 0, 0; lo < cfg.tags; seg, lo = seg+1, lo+cfg.tagSegment {
		hi := min(lo+cfg.tagSegment, cfg.tags)
		for _, i := range order(seg) {
			d, err := putTags(ctx, b.sides[i].c, repo, b.img, lo, hi, cfg.tagStreams, bufs)
			if err != nil {
				return fmt.Errorf("%s: %w", b.sides[i].name, err)
			}
			b.rep.sides[i].tagRates = append(b.rep.sides[i].tagRates, float64(hi-lo)/d.Seconds())
		}
		fmt.Fprintf(b.out, "tags %5d-%5d: %-24s %6.0f tags/s   %-14s %6.0f tags/s\n", lo, hi,
			b.sides[0].name, b.rep.sides[0].tagRates[seg], b.sides[1].name, b.rep.sides[1].tagRates[seg])
	}

	var list, walk [2][]time.Duration
	for r := range cfg.listRuns {
		for _, i := range order(r) {
			d, err := listTags(ctx, b.sides[i].c, repo, cfg.tags)
			if err != nil {
				return fmt.Errorf("%s: %w", b.sides[i].name, err)
			}
			list[i] = append(list[i], d)
		}
	}
	for r := range cfg.walkRuns {
		for _, i := range order(r) {
			d, err := walkTags(ctx, b.sides[i].c, repo, cfg.pageSize, cfg.tags)
			if err != nil {
				return fmt.Errorf("%s: %w", b.sides[i].name, err)
			}
			walk[i] = append(walk[i], d)
		}
	}
	for i := range b.sides {
		b.rep.sides[i].list = median(list[i])
		b.rep.sides[i].walk = median(walk[i])
		fmt.Fprintf(b.out, "%-24s tags/list of %d: %s   walk n=%d: %s\n", b.sides[i].name, cfg.tags,
			fmtDur(b.rep.sides[i].list), cfg.pageSize, fmtDur(b.rep.sides[i].walk))
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
