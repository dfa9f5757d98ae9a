package buildkit

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/worker/engine"
)

// stepName matches the names BuildKit's Dockerfile frontend gives the
// vertices of Dockerfile instructions: "[stage n/m] INSTRUCTION …" or
// "[n/m] INSTRUCTION …" in a build of one unnamed stage.
var stepName = regexp.MustCompile(`^\[(?:[^\]]* )?\d+/\d+\] `)

// maxLineBytes bounds one line of output kept for the log: the rest of a
// longer line is dropped (and counted). The build manager cuts lines
// shorter still (BUILD_LOG_MAX_LINE_BYTES).
const maxLineBytes = 1 << 20

// progress turns BuildKit's status updates into log lines: a command line
// when a Dockerfile step starts, its output line by line as it comes, and a
// line for a cached step and for each error and warning.
type progress struct {
	sink engine.LogSink
	// hide replaces build-argument values in what BuildKit writes about
	// the build (see hideArgs).
	hide *strings.Replacer
	// seen are the vertices already announced.
	seen map[digest.Digest]bool
	// partial holds the unfinished last line of each vertex's stream.
	partial map[logKey][]byte
	// failed is the name of the last vertex that failed ("" when none).
	failed string
}

type logKey struct {
	vertex digest.Digest
	stream int
}

func newProgress(sink engine.LogSink, hide *strings.Replacer) *progress {
	return &progress{sink: sink, hide: hide, seen: map[digest.Digest]bool{}, partial: map[logKey][]byte{}}
}

// hideArgs returns the replacer that shows each build argument's value as
// "$NAME": BuildKit names a step by its instruction with the build
// arguments expanded (a RUN step that uses $NPM_TOKEN shows the token),
// and the log shows the instruction as written instead. Longer values go
// first, so that a value inside another is not half replaced.
func hideArgs(args map[string]string) *strings.Replacer {
	names := make([]string, 0, len(args))
	for k, v := range args {
		if v != "" {
			names = append(names, k)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if a, b := args[names[i]], args[names[j]]; len(a) != len(b) {
			return len(a) > len(b)
		}
		return names[i] < names[j]
	})
	pairs := make([]string, 0, 2*len(names))
	for _, k := range names {
		pairs = append(pairs, args[k], "$"+k)
	}
	return strings.NewReplacer(pairs...)
}

// update logs what one status update says.
func (p *progress) update(s *client.SolveStatus) {
	for _, v := range s.Vertexes {
		if !p.seen[v.Digest] && (v.Started != nil || v.Cached) {
			p.seen[v.Digest] = true
			typ := engine.LineOutput
			if stepName.MatchString(v.Name) {
				typ = engine.LineCommand
			}
			p.sink.Log(typ, p.hide.Replace(v.Name))
			if v.Cached {
				p.sink.Log(engine.LineOutput, "CACHED")
			}
		}
		if v.Completed != nil {
			p.flush(v.Digest)
		}
		if v.Error != "" {
			p.failed = p.hide.Replace(v.Name)
			p.sink.Log(engine.LineOutput, "ERROR: "+p.hide.Replace(v.Error))
		}
	}
	for _, l := range s.Logs {
		p.write(logKey{l.Vertex, l.Stream}, l.Data)
	}
	for _, w := range s.Warnings {
		p.sink.Log(engine.LineOutput, "WARNING: "+p.hide.Replace(strings.TrimSpace(string(w.Short))))
	}
}

// write sends the complete lines of data to the sink and keeps the rest.
func (p *progress) write(k logKey, data []byte) {
	buf := append(p.partial[k], data...)
	for {
		i := strings.IndexByte(string(buf), '\n')
		if i < 0 {
			break
		}
		p.emit(buf[:i])
		buf = buf[i+1:]
	}
	p.partial[k] = buf
}

// flush sends what is left of a finished vertex's output.
func (p *progress) flush(v digest.Digest) {
	for k, rest := range p.partial {
		if k.vertex == v {
			if len(rest) > 0 {
				p.emit(rest)
			}
			delete(p.partial, k)
		}
	}
}

// flushAll sends what is left of every vertex's output.
func (p *progress) flushAll() {
	for k := range p.partial {
		p.flush(k.vertex)
	}
}

func (p *progress) emit(line []byte) {
	text := strings.TrimRight(string(line), "\r")
	if len(text) > maxLineBytes {
		text = text[:maxLineBytes] + fmt.Sprintf(" [line cut: %d more bytes]", len(text)-maxLineBytes)
	}
	p.sink.Log(engine.LineOutput, text)
}
