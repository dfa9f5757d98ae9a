package buildkit

import (
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginetest"
)

func TestEngineSuite(t *testing.T) {
	t.Parallel()
	requireBuildUser(t)
	enginetest.Run(t, func(t *testing.T) engine.Engine { return New() })
}

// The frontend finds a named build context under the image's familiar
// name, without ":latest".
func TestContextName(t *testing.T) {
	for ref, want := range map[string]string{
		"busybox":                        "busybox",
		"docker.io/library/busybox:1.36": "busybox:1.36",
		"127.0.0.1:5000/lib/busybox":     "127.0.0.1:5000/lib/busybox",
		"127.0.0.1:5000/lib/tools:copy":  "127.0.0.1:5000/lib/tools:copy",
		"quay.io/a/b:latest":             "quay.io/a/b",
	} {
		if got, err := contextName(ref); err != nil || got != want {
			t.Errorf("contextName(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	if _, err := contextName("Not A Reference"); err == nil {
		t.Error("contextName accepted an invalid reference")
	}
}

// BuildKit's progress becomes a command line per Dockerfile step, the
// step's output line by line (a line split across updates joined), and
// lines for cached steps and errors.
func TestProgress(t *testing.T) {
	log := &enginetest.Log{}
	p := newProgress(log, hideArgs(map[string]string{"WORD": "hi", "EMPTY": ""}))
	now := time.Now()
	load, run, cached := digest.FromString("load"), digest.FromString("run"), digest.FromString("cached")
	p.update(&client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: load, Name: "[internal] load build definition from Dockerfile", Started: &now},
		{Digest: cached, Name: "[base 1/2] FROM example.com/busybox", Cached: true},
		{Digest: run, Name: "[2/2] RUN echo hi there", Started: &now},
	}})
	// The same vertex again is not announced twice.
	p.update(&client.SolveStatus{
		Vertexes: []*client.Vertex{{Digest: run, Name: "[2/2] RUN echo hi there", Started: &now}},
		Logs:     []*client.VertexLog{{Vertex: run, Stream: 1, Data: []byte("first\nsec")}},
	})
	p.update(&client.SolveStatus{Logs: []*client.VertexLog{{Vertex: run, Stream: 1, Data: []byte("ond\r\nunfinished")}}})
	p.update(&client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: run, Name: "[2/2] RUN echo hi there", Started: &now, Completed: &now, Error: "exit code: 1"},
	}})
	want := []enginetest.Line{
		{Type: engine.LineOutput, Message: "[internal] load build definition from Dockerfile"},
		{Type: engine.LineCommand, Message: "[base 1/2] FROM example.com/busybox"},
		{Type: engine.LineOutput, Message: "CACHED"},
		{Type: engine.LineCommand, Message: "[2/2] RUN echo $WORD there"},
		{Type: engine.LineOutput, Message: "first"},
		{Type: engine.LineOutput, Message: "second"},
		{Type: engine.LineOutput, Message: "unfinished"},
		{Type: engine.LineOutput, Message: "ERROR: exit code: 1"},
	}
	got := log.Lines()
	if len(got) != len(want) {
		t.Fatalf("lines:\n%s\nwant %d", log.Text(), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if p.failed != "[2/2] RUN echo $WORD there" {
		t.Errorf("failed step = %q", p.failed)
	}
}

// A line longer than maxLineBytes is cut, with a note of what was dropped.
func TestProgressLongLine(t *testing.T) {
	log := &enginetest.Log{}
	p := newProgress(log, hideArgs(nil))
	v := digest.FromString("v")
	p.update(&client.SolveStatus{Logs: []*client.VertexLog{{Vertex: v, Data: []byte(strings.Repeat("x", maxLineBytes+5) + "\nnext\n")}}})
	got := log.Lines()
	if len(got) != 2 || got[0].Message != strings.Repeat("x", maxLineBytes)+" [line cut: 5 more bytes]" || got[1].Message != "next" {
		t.Errorf("%d lines, first %d bytes", len(got), len(got[0].Message))
	}
}

// Build-argument values are shown as the arguments' names, the longest
// value first, so that one inside another stays whole.
func TestHideArgs(t *testing.T) {
	h := hideArgs(map[string]string{"TOKEN": "abc-secret", "PART": "secret", "EMPTY": ""})
	for in, want := range map[string]string{
		"[1/2] RUN curl -H abc-secret x": "[1/2] RUN curl -H $TOKEN x",
		"echo secret":                    "echo $PART",
		"nothing here":                   "nothing here",
	} {
		if got := h.Replace(in); got != want {
			t.Errorf("hide(%q) = %q, want %q", in, got, want)
		}
	}
}
