package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/dockerfile"
	"github.com/berth-dev/berth/gitsource"
	"github.com/berth-dev/berth/internal/builderr"
	"github.com/berth-dev/berth/internal/jsonerr"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
)

// Analyzer statuses (Quay's): the Dockerfile's base image needs no
// credentials (publicbase), needs a pull robot (requiresrobot), may not
// build (warning), or cannot build (error).
const (
	AnalyzePublicBase    = "publicbase"
	AnalyzeRequiresRobot = "requiresrobot"
	AnalyzeWarning       = "warning"
	AnalyzeError         = "error"
)

// analyzeRank orders the statuses of a multi-stage Dockerfile's bases: the
// highest is reported. A private base surely fails without a robot, a
// warning only may.
var analyzeRank = map[string]int{AnalyzePublicBase: 1, AnalyzeWarning: 2, AnalyzeRequiresRobot: 3, AnalyzeError: 4}

// maxAnalyzedDockerfile bounds the Dockerfile analyze reads, as the
// worker's parser does.
const maxAnalyzedDockerfile = 1 << 20

// Analysis is the analyzer's finding about the Dockerfile: the gravest of
// its base images'.
type Analysis struct {
	Status, Message string
	// Repository is the berth repository of the reported base image, when
	// the caller may know it exists.
	Repository *store.Repository
}

// Registry is what the analyzer asks the caller about this registry.
type Registry struct {
	// Hosts are the names clients reach this registry by, as NormalHost
	// gives them.
	Hosts map[string]bool
	// Repository is the berth repository namespace/name if the caller may
	// read it; nil, and no error, when it does not exist or the caller may
	// not read it, which are reported alike.
	Repository func(ctx context.Context, namespace, name string) (*store.Repository, error)
}

// NormalHost lower-cases a host[:port] and drops a default port.
func NormalHost(h string) string {
	h = strings.ToLower(h)
	for _, p := range []string{":443", ":80"} {
		h = strings.TrimSuffix(h, p)
	}
	return h
}

// Analyze is Quay's trigger analyzer: it reads the Dockerfile a build of
// the trigger's config with the proposed keys laid over it would use, from
// the default branch of the trigger's git source with the trigger's own
// credentials, and tells whether its base images need a pull robot.
// Multi-stage Dockerfiles are judged on every FROM that pulls; the gravest
// finding is reported. Only a config that does not decode and a store
// failure are errors; everything about the Dockerfile is a finding.
func (s *Service) Analyze(ctx context.Context, tr *store.Trigger, proposed map[string]any, reg Registry) (Analysis, error) {
	cfg, err := proposedConfig(tr, proposed)
	if err != nil {
		return Analysis{}, err
	}
	dfPath, contextPath, err := triggers.BuildPaths(cfg)
	if err != nil {
		return Analysis{Status: AnalyzeError, Message: "The trigger's paths are invalid: " + err.Error()}, nil
	}
	if s.GitURL(tr, cfg) == "" {
		return Analysis{Status: AnalyzeError, Message: "The trigger has no build_source to read the Dockerfile from."}, nil
	}
	src, err := s.gitSource(tr, cfg, "")
	if err != nil {
		return Analysis{}, err
	}
	content, err := gitsource.ReadFile(ctx, s.egress, src, dfPath, maxAnalyzedDockerfile)
	if finding, ok := s.readFinding(ctx, tr, dfPath, err); ok {
		return finding, nil
	}
	bases, perr := triggers.BaseImages(content)
	if perr != nil && !errors.Is(perr, dockerfile.ErrNoFrom) && !errors.Is(perr, dockerfile.ErrUnresolvedArg) {
		return Analysis{Status: AnalyzeError, Message: "The Dockerfile " + dfPath + " cannot be parsed: " + userMessage(perr)}, nil
	}
	if !triggers.InContext(dfPath, contextPath) {
		return Analysis{Status: AnalyzeError, Message: fmt.Sprintf("The Dockerfile %s is not inside the build context %s.", dfPath, contextPath)}, nil
	}
	switch {
	case errors.Is(perr, dockerfile.ErrNoFrom):
		return Analysis{Status: AnalyzeWarning, Message: "The Dockerfile " + dfPath + " has no FROM instruction, so its builds will fail."}, nil
	case perr != nil:
		return Analysis{Status: AnalyzeWarning, Message: "The Dockerfile " + dfPath + " may not build: " + userMessage(perr)}, nil
	}
	var worst Analysis
	for _, b := range bases {
		found, err := analyzeBase(ctx, b, reg)
		if err != nil {
			return Analysis{}, err
		}
		if analyzeRank[found.Status] > analyzeRank[worst.Status] {
			worst = found
		}
	}
	if worst.Status == "" {
		// Only scratch and earlier stages: nothing to pull.
		worst = Analysis{Status: AnalyzePublicBase, Message: "The Dockerfile pulls no base image."}
	}
	return worst, nil
}

// proposedConfig is the trigger's stored config with the proposed keys
// laid over it.
func proposedConfig(tr *store.Trigger, proposed map[string]any) (triggers.Config, error) {
	merged := map[string]any{}
	if len(tr.Config) > 0 {
		if err := json.Unmarshal(tr.Config, &merged); err != nil {
			return triggers.Config{}, fmt.Errorf("trigger %s config: %w", tr.UUID, err)
		}
	}
	for k, v := range proposed {
		merged[k] = v
	}
	b, err := json.Marshal(merged)
	if err != nil {
		return triggers.Config{}, fmt.Errorf("trigger %s proposed config: %w", tr.UUID, err)
	}
	var cfg triggers.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return triggers.Config{}, &RequestError{Message: "Invalid trigger config: " + jsonerr.Problem(err), Err: err}
	}
	return cfg, nil
}

// readFinding turns a failure to read the Dockerfile into a finding; ok
// is false when it was read.
func (s *Service) readFinding(ctx context.Context, tr *store.Trigger, dfPath string, err error) (Analysis, bool) {
	switch {
	case err == nil:
		return Analysis{}, false
	case errors.Is(err, gitsource.ErrFileNotFound), errors.Is(err, gitsource.ErrRefNotFound):
		return Analysis{Status: AnalyzeWarning, Message: "The Dockerfile " + dfPath +
			" was not found on the default branch of the git repository; builds of this trigger may fail."}, true
	case errors.Is(err, gitsource.ErrFileTooLarge):
		return Analysis{Status: AnalyzeError, Message: fmt.Sprintf("The Dockerfile %s is larger than %d bytes.", dfPath, maxAnalyzedDockerfile)}, true
	}
	if ue, ok := builderr.AsUserError(err); ok {
		return Analysis{Status: AnalyzeError, Message: "The git repository could not be read: " + ue.Message}, true
	}
	s.log.WarnContext(ctx, "reading a trigger's Dockerfile failed", "trigger", tr.UUID, "err", err)
	return Analysis{Status: AnalyzeError, Message: "The git repository could not be read: its server did not answer in time or broke the connection."}, true
}

// userMessage is a Dockerfile error's message for the caller.
func userMessage(err error) string {
	if ue, ok := builderr.AsUserError(err); ok {
		return ue.Message
	}
	return err.Error()
}

// analyzeBase judges one base image. A berth repository the caller cannot
// read is reported exactly like a missing one.
func analyzeBase(ctx context.Context, b triggers.BaseImage, reg Registry) (Analysis, error) {
	line := fmt.Sprintf("line %d: ", b.Line)
	if len(b.Unresolved) > 0 {
		return Analysis{Status: AnalyzeWarning, Message: line + "FROM " + b.Ref + " uses the build argument " +
			strings.Join(b.Unresolved, ", ") + " without a value; trigger builds pass none, so the base image may not be the one meant."}, nil
	}
	if !reg.Hosts[NormalHost(b.Host)] {
		return Analysis{Status: AnalyzePublicBase, Message: line + "the base image " + b.Ref + " is from another registry: no robot of this one is needed to pull it."}, nil
	}
	ns, name, ok := strings.Cut(b.Repository, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return Analysis{Status: AnalyzeWarning, Message: line + "the base image " + b.Ref + " does not name a repository of this registry as namespace/name."}, nil
	}
	base, err := reg.Repository(ctx, ns, name)
	switch {
	case err != nil:
		return Analysis{}, err
	case base == nil:
		return Analysis{Status: AnalyzeError, Message: line + "the base repository " + ns + "/" + name + " was not found."}, nil
	case base.Visibility == store.Public:
		return Analysis{Status: AnalyzePublicBase, Repository: base, Message: line + "the base repository " + base.FullName() + " is public."}, nil
	}
	return Analysis{Status: AnalyzeRequiresRobot, Repository: base, Message: line + "the base repository " + base.FullName() +
		" is private: the trigger needs a pull robot that can read it."}, nil
}
