package enginehost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berth-dev/berth/worker/engine"
)

// recordedSteps records what Run asked of it, and whether the auth file
// existed at each step.
type recordedSteps struct {
	auth  string
	calls []string
}

func (s *recordedSteps) record(step string) {
	_, err := os.Stat(s.auth)
	s.calls = append(s.calls, fmt.Sprintf("%s auth=%t", step, err == nil))
}

func (s *recordedSteps) Configure() error { s.record("configure"); return nil }
func (s *recordedSteps) Cleanup()         { s.record("cleanup") }
func (s *recordedSteps) AuthFile() AuthFile {
	return AuthFile{Engine: "test", Path: s.auth, Logger: slog.Default(), Registry: engine.Registry{Host: "registry.test", Username: "u", Password: "p"}}
}
func (s *recordedSteps) Pull(_ context.Context, i int, img string) error {
	s.record(fmt.Sprintf("pull %d %s", i, img))
	return nil
}
func (s *recordedSteps) Build(context.Context) error { s.record("build"); return nil }
func (s *recordedSteps) Push(_ context.Context, tag string) (string, error) {
	s.record("push " + tag)
	return "sha256:" + tag, nil
}

// Run takes the steps in order, reports each phase, and keeps the
// credentials on disk during pulls and pushes only.
func TestRun(t *testing.T) {
	s := &recordedSteps{auth: filepath.Join(t.TempDir(), "auth.json")}
	var phases []engine.Phase
	req := engine.Request{
		Tags: []string{"a", "b"}, BaseImages: []string{"x", "y"},
		OnPhase: func(_ context.Context, p engine.Phase) error {
			phases = append(phases, p)
			s.record("phase " + fmt.Sprint(p))
			return nil
		},
	}
	res, err := Run(context.Background(), "test", req, s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"configure auth=false",
		"phase " + fmt.Sprint(engine.PhasePulling) + " auth=false",
		"pull 0 x auth=true", "pull 1 y auth=true",
		"phase " + fmt.Sprint(engine.PhaseBuilding) + " auth=false",
		"build auth=false",
		"phase " + fmt.Sprint(engine.PhasePushing) + " auth=false",
		"push a auth=true", "push b auth=true",
		"cleanup auth=false",
	}
	if !slices.Equal(s.calls, want) {
		t.Errorf("steps:\n%q\nwant\n%q", s.calls, want)
	}
	if len(res.Digests) != 2 || res.Digests["a"] != "sha256:a" || res.Digests["b"] != "sha256:b" {
		t.Errorf("digests = %v", res.Digests)
	}
}

// Without tags nothing runs; a phase refused stops the build, cleaned up.
func TestRunStops(t *testing.T) {
	s := &recordedSteps{auth: filepath.Join(t.TempDir(), "auth.json")}
	if _, err := Run(context.Background(), "test", engine.Request{}, s); err == nil || err.Error() != "test: no tags to push" || len(s.calls) != 0 {
		t.Errorf("without tags: %v, steps %q", err, s.calls)
	}
	refused := errors.New("cancelled by the user")
	req := engine.Request{Tags: []string{"a"}, BaseImages: []string{"x"}, OnPhase: func(_ context.Context, p engine.Phase) error {
		if p == engine.PhaseBuilding {
			return refused
		}
		return nil
	}}
	_, err := Run(context.Background(), "test", req, s)
	if !errors.Is(err, refused) || !slices.Equal(s.calls, []string{"configure auth=false", "pull 0 x auth=true", "cleanup auth=false"}) {
		t.Errorf("refused phase: %v, steps %q", err, s.calls)
	}
}
