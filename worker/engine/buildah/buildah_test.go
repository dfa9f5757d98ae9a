package buildah

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/worker/engine"
	"github.com/berth-dev/berth/worker/engine/enginehost"
	"github.com/berth-dev/berth/worker/engine/enginetest"
	"github.com/berth-dev/berth/worker/sandbox"
)

func TestEngineSuite(t *testing.T) {
	t.Parallel()
	enginetest.RequireBuildUser(t)
	enginetest.Run(t, func(t *testing.T) engine.Engine { return New() })
}

func TestStepLine(t *testing.T) {
	for line, want := range map[string]bool{
		"STEP 1/3: FROM busybox":          true,
		"[2/2] STEP 3/3: RUN echo hi":     true,
		"Step 2/5 : RUN make":             true,
		"  STEP 1/3: indented is output":  false,
		"--> 58836ba2ec5":                 false,
		"[1/2] COMMIT example.com/app:v1": false,
		"STEPS 1/2: not a step":           false,
	} {
		if got := stepLine.MatchString(line); got != want {
			t.Errorf("stepLine(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestRefHost(t *testing.T) {
	for ref, want := range map[string]string{
		"busybox":                     "docker.io",
		"library/busybox:1":           "docker.io",
		"127.0.0.1:5000/a/b:c":        "127.0.0.1:5000",
		"localhost/a":                 "localhost",
		"quay.io/x/y@sha256:abc":      "quay.io",
		"docker://registry.example/x": "registry.example",
	} {
		if got := refHost(ref); got != want {
			t.Errorf("refHost(%q) = %q, want %q", ref, got, want)
		}
	}
}

// A line longer than maxLineBytes is cut, with a note of what was dropped,
// and the output after it still reaches the log.
func TestStreamLongLines(t *testing.T) {
	long := strings.Repeat("x", 3*maxLineBytes)
	var got []string
	r := &run{sink: engine.LogFunc(func(_ engine.LineType, m string) { got = append(got, m) })}
	r.stream(strings.NewReader("first\r\n"+long+"\nSTEP 2/3: RUN true\nlast"), &enginehost.Tail{})
	if len(got) != 4 {
		t.Fatalf("%d lines, want 4", len(got))
	}
	want := strings.Repeat("x", maxLineBytes) + fmt.Sprintf(" [line cut: %d more bytes]", 2*maxLineBytes)
	if got[0] != "first" || got[1] != want || got[2] != "STEP 2/3: RUN true" || got[3] != "last" {
		t.Errorf("lines = %q, %d bytes, %q, %q", got[0], len(got[1]), got[2], got[3])
	}
}

// A worker's buildah takes the sandbox's network exceptions from the
// environment its executor gave it.
func TestFromWorkerEnvironment(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == sandbox.AllowedNetworksEnv {
				return v
			}
			return ""
		}
	}
	all, err := engine.Make(engine.Options{Getenv: env("10.30.0.0/24,192.168.7.7")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := all[Name].(*Engine)
	if !ok {
		t.Fatalf("engines = %v, want buildah among them", all)
	}
	if got := egress.FormatNetworks(e.Sandbox.AllowedNetworks); got != "10.30.0.0/24,192.168.7.7/32" {
		t.Errorf("allowed networks = %s", got)
	}
	if all, err := engine.Make(engine.Options{Getenv: env("")}, nil); err != nil || len(all[Name].(*Engine).Sandbox.AllowedNetworks) != 0 {
		t.Errorf("without exceptions: %v, %v", all, err)
	}
	if _, err := engine.Make(engine.Options{Getenv: env("not-a-network")}, nil); err == nil || !strings.Contains(err.Error(), sandbox.AllowedNetworksEnv) {
		t.Errorf("a bad exception = %v, want an error naming %s", err, sandbox.AllowedNetworksEnv)
	}
}
