package main

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"
)

// Targets from the registry-core issue, as ratios berth/distribution
// unless said otherwise.
const (
	targetPushRatio    = 1.0
	targetPushCeiling  = 0.85 // of min(sha256 ceiling, disk ceiling), absolute
	targetPullRatio    = 1.35
	targetGetRatio     = 2.0
	targetTagWriteRate = 1000.0 // tags/s at the full tag count, absolute
)

// row is one line of the final table. ratio is berth/distribution (NaN
// when it cannot be formed); verdict is PASS, MISS, or empty for rows that
// are shown for context and have no target.
type row struct {
	workload    string
	berth, dist string
	ratio       float64
	target      string
	verdict     string
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func ratio(berth, dist float64) float64 {
	if dist == 0 || math.IsNaN(berth) || math.IsNaN(dist) {
		return math.NaN()
	}
	return berth / dist
}

// rows turns a report into the table, judging each target.
func (r *report) rows() []row {
	b, d := &r.sides[0], &r.sides[1]
	var out []row

	floor := targetPushCeiling * min(r.shaMBps, r.diskMBps)
	pr := ratio(b.pushMBps, d.pushMBps)
	out = append(out, row{
		workload: "blob push (MB/s)",
		berth:    fmt.Sprintf("%.1f", b.pushMBps), dist: fmt.Sprintf("%.1f", d.pushMBps),
		ratio:   pr,
		target:  fmt.Sprintf(">=%.2fx and >=%.0f MB/s", targetPushRatio, floor),
		verdict: verdict(pr >= targetPushRatio && b.pushMBps >= floor),
	})
	pl := ratio(b.pullMBps, d.pullMBps)
	out = append(out, row{
		workload: "blob pull, sha256-checked (MB/s)",
		berth:    fmt.Sprintf("%.1f", b.pullMBps), dist: fmt.Sprintf("%.1f", d.pullMBps),
		ratio: pl, target: fmt.Sprintf(">=%.2fx", targetPullRatio), verdict: verdict(pl >= targetPullRatio),
	})
	if r.blobsOnly {
		return out
	}

	for k := range min(len(b.gets), len(d.gets)) {
		bg, dg := b.gets[k], d.gets[k]
		gr := ratio(bg.reqPerS, dg.reqPerS)
		out = append(out,
			row{
				workload: fmt.Sprintf("manifest GET c=%d (req/s)", bg.conc),
				berth:    fmt.Sprintf("%.0f", bg.reqPerS), dist: fmt.Sprintf("%.0f", dg.reqPerS),
				ratio: gr, target: fmt.Sprintf(">=%.2fx", targetGetRatio), verdict: verdict(gr >= targetGetRatio),
			},
			latencyRow(fmt.Sprintf("  p50 latency c=%d", bg.conc), bg.p50, dg.p50, "", false),
			latencyRow(fmt.Sprintf("  p99 latency c=%d", bg.conc), bg.p99, dg.p99, "", false),
		)
	}

	if n := min(len(b.tagRates), len(d.tagRates)); n > 0 {
		out = append(out, row{
			workload: fmt.Sprintf("tag writes 0-%d (tags/s)", r.tagSegment),
			berth:    fmt.Sprintf("%.0f", b.tagRates[0]), dist: fmt.Sprintf("%.0f", d.tagRates[0]),
			ratio: ratio(b.tagRates[0], d.tagRates[0]),
		})
		last := b.tagRates[n-1]
		out = append(out, row{
			workload: fmt.Sprintf("tag writes at %d tags (tags/s)", r.tags),
			berth:    fmt.Sprintf("%.0f", last), dist: fmt.Sprintf("%.0f", d.tagRates[n-1]),
			ratio:   ratio(last, d.tagRates[n-1]),
			target:  fmt.Sprintf(">=%.0f/s", targetTagWriteRate),
			verdict: verdict(last >= targetTagWriteRate),
		})
	}
	out = append(out,
		latencyRow(fmt.Sprintf("tags/list of %d (median)", r.tags), b.list, d.list, "<1.00x", true),
		latencyRow(fmt.Sprintf("tags walk n=%d via Link (median)", r.pageSize), b.walk, d.walk, "<1.00x", true),
	)
	return out
}

// latencyRow compares two durations; when judged, berth must be faster.
func latencyRow(name string, berth, dist time.Duration, target string, judged bool) row {
	rt := ratio(float64(berth), float64(dist))
	r := row{workload: name, berth: fmtDur(berth), dist: fmtDur(dist), ratio: rt, target: target}
	if judged {
		r.verdict = verdict(rt < 1)
	}
	return r
}

// printTable writes the ceilings and the comparison table.
func printTable(w io.Writer, r *report) {
	fmt.Fprintf(w, "\nceilings: sha256 one core %.0f MB/s, fsync'd sequential write %.0f MB/s (MB = 10^6 bytes)\n", r.shaMBps, r.diskMBps)
	fmt.Fprintf(w, "berth column: %s\n\n", r.berthLabel)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tberth\tdistribution\tratio\ttarget\t")
	pass, miss := 0, 0
	for _, x := range r.rows() {
		rs := "-"
		if !math.IsNaN(x.ratio) {
			rs = fmt.Sprintf("%.2fx", x.ratio)
		}
		switch x.verdict {
		case "PASS":
			pass++
		case "MISS":
			miss++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.workload, x.berth, x.dist, rs, x.target, x.verdict)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%d PASS, %d MISS\n", pass, miss)
}

// fmtDur prints a latency with three significant figures in ms.
func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f ms", ms)
	}
}
