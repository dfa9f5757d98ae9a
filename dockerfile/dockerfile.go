// Package dockerfile checks a Dockerfile before a build and finds the base
// images it needs, so that a syntax error or a missing base image fails in
// a second with a clear message instead of deep inside the build engine.
package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/berth-dev/berth/internal/builderr"
)

// maxSize bounds the Dockerfile read into memory.
const maxSize = 1 << 20

// Stage is one FROM section of a Dockerfile.
type Stage struct {
	// Name is the stage's lower-cased name ("" when unnamed).
	Name string
	// Base is the FROM argument with build arguments applied: an image
	// reference, "scratch", or the name of an earlier stage.
	Base string
	// Line is the FROM instruction's line (1-based).
	Line int
	// Unresolved are the build arguments the FROM refers to that have no
	// value (undeclared, or declared without a default and not given):
	// they expanded to nothing, so Base is likely not what was meant.
	Unresolved []string
}

// ErrNoFrom is in the chain of Parse's error for a Dockerfile without a
// FROM instruction (an empty one included).
var ErrNoFrom = errors.New("no FROM instruction")

// ErrUnresolvedArg is in the chain of Parse's error for a FROM that names
// no image because a build argument it uses has no value.
var ErrUnresolvedArg = errors.New("build argument without a value")

// Info is what the worker learns from a Dockerfile before building it.
type Info struct {
	Stages []Stage
	// BaseImages are the distinct images (not stages, not scratch) that the
	// stages up to the target start from, copy from (COPY --from) or mount
	// (RUN --mount=from=), in order of first use.
	BaseImages []string
}

// Parse checks the Dockerfile content and finds its stages and base images.
// buildArgs override the defaults of ARGs declared before the first FROM;
// target, when set, must name a stage and limits BaseImages to the stages up
// to it. Every problem is an *builderr.UserError with code "dockerfile", whose
// message names the line.
func Parse(content []byte, buildArgs map[string]string, target string) (*Info, error) {
	if len(content) > maxSize {
		return nil, builderr.Errorf(builderr.CodeDockerfile, "the Dockerfile is larger than %d bytes", maxSize)
	}
	if len(bytes.TrimSpace(content)) == 0 {
		return nil, &builderr.UserError{Code: builderr.CodeDockerfile, Message: "the Dockerfile is empty", Err: ErrNoFrom}
	}
	res, err := parser.Parse(bytes.NewReader(content))
	if err != nil {
		return nil, syntaxError(err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, syntaxError(err)
	}
	if len(stages) == 0 {
		return nil, &builderr.UserError{Code: builderr.CodeDockerfile, Message: "the Dockerfile has no FROM instruction", Err: ErrNoFrom}
	}
	args := argEnv{}
	// noValue are the ARGs declared without a default and not given.
	noValue := map[string]bool{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			noValue[kv.Key] = false
			if v, ok := buildArgs[kv.Key]; ok {
				args[kv.Key] = v
			} else if kv.Value != nil {
				// A default may refer to an earlier ARG.
				v, _, err := shell.NewLex(res.EscapeToken).ProcessWord(*kv.Value, args)
				if err != nil {
					return nil, lineError(a.Location(), fmt.Errorf("ARG %s: %w", kv.Key, err))
				}
				args[kv.Key] = v
			} else {
				args[kv.Key] = ""
				noValue[kv.Key] = true
			}
		}
	}
	info := &Info{}
	last := len(stages) - 1
	if target != "" {
		last = -1
		for i, s := range stages {
			if strings.EqualFold(s.Name, target) {
				last = i
			}
		}
		if last < 0 {
			return nil, builderr.Errorf(builderr.CodeDockerfile, "the target stage %q is not in the Dockerfile", target)
		}
	}
	named := map[string]bool{}
	seen := map[string]bool{}
	for i, s := range stages {
		word, err := shell.NewLex(res.EscapeToken).ProcessWordWithMatches(s.BaseName, args)
		if err != nil {
			return nil, lineError(s.Location, fmt.Errorf("FROM %s: %w", s.BaseName, err))
		}
		base := word.Result
		var unresolved []string
		for k := range word.Unmatched {
			unresolved = append(unresolved, k)
		}
		for k := range word.Matched {
			if noValue[k] {
				unresolved = append(unresolved, k)
			}
		}
		slices.Sort(unresolved)
		if base == "" && len(unresolved) > 0 {
			return nil, lineError(s.Location, fmt.Errorf("FROM %s names no image: %w (%s)", s.BaseName, ErrUnresolvedArg, strings.Join(unresolved, ", ")))
		}
		if base == "" {
			return nil, lineError(s.Location, fmt.Errorf("FROM %s names no image (is a build argument missing?)", s.BaseName))
		}
		line := 0
		if len(s.Location) > 0 {
			line = s.Location[0].Start.Line
		}
		info.Stages = append(info.Stages, Stage{Name: s.Name, Base: base, Line: line, Unresolved: unresolved})
		if i <= last && !named[strings.ToLower(base)] && !strings.EqualFold(base, "scratch") && !seen[base] {
			if err := checkRef(base); err != nil {
				return nil, lineError(s.Location, fmt.Errorf("FROM %s: %w", base, err))
			}
			seen[base] = true
			info.BaseImages = append(info.BaseImages, base)
		}
		if i <= last {
			if err := addCopySources(info, s, named, seen, args, res.EscapeToken); err != nil {
				return nil, err
			}
		}
		if s.Name != "" {
			named[s.Name] = true
		}
	}
	return info, nil
}

// addCopySources adds the images a stage copies or mounts from (COPY
// --from=<image>, RUN --mount=from=<image>) to info.BaseImages: the build
// engine pulls every image before the build, which itself reaches no
// registry.
func addCopySources(info *Info, s instructions.Stage, named, seen map[string]bool, args argEnv, escape rune) error {
	for _, c := range s.Commands {
		var sources []string
		switch cmd := c.(type) {
		case *instructions.CopyCommand:
			sources = append(sources, cmd.From)
		case *instructions.RunCommand:
			for _, m := range instructions.GetMounts(cmd) {
				sources = append(sources, m.From)
			}
		}
		for _, src := range sources {
			if src == "" {
				continue
			}
			loc := c.(interface{ Location() []parser.Range }).Location()
			from, err := shell.NewLex(escape).ProcessWordWithMatches(src, args)
			if err != nil {
				return lineError(loc, fmt.Errorf("from=%s: %w", src, err))
			}
			ref := from.Result
			if _, err := strconv.Atoi(ref); err == nil || named[strings.ToLower(ref)] || ref == "" || seen[ref] {
				continue
			}
			if err := checkRef(ref); err != nil {
				return lineError(loc, fmt.Errorf("from=%s: %w", ref, err))
			}
			seen[ref] = true
			info.BaseImages = append(info.BaseImages, ref)
		}
	}
	return nil
}

// checkRef rejects base names no registry could serve, so that they fail as
// Dockerfile errors rather than as pull errors.
func checkRef(ref string) error {
	if strings.ContainsAny(ref, " \t\n\"'") || strings.HasPrefix(ref, "-") {
		return errors.New("not a valid image reference")
	}
	return nil
}

// argEnv is the build-argument environment FROM lines are expanded with.
type argEnv map[string]string

func (e argEnv) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }

func (e argEnv) Keys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	return keys
}

// syntaxError turns a parser error into a user error naming its line.
func syntaxError(err error) error {
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		return lineError(le.Locations[0], errors.Unwrap(le))
	}
	return &builderr.UserError{Code: builderr.CodeDockerfile, Message: "Dockerfile syntax error: " + err.Error(), Err: err}
}

func lineError(loc []parser.Range, err error) error {
	msg := err.Error()
	// instructions.Parse says the line itself; keep one mention of it.
	if i := strings.Index(msg, "dockerfile parse error on line "); i >= 0 {
		if j := strings.Index(msg[i:], ": "); j >= 0 {
			msg = msg[:i] + msg[i+j+2:]
		}
	}
	if len(loc) == 0 || loc[0].Start.Line <= 0 {
		return &builderr.UserError{Code: builderr.CodeDockerfile, Message: "Dockerfile syntax error: " + msg, Err: err}
	}
	return &builderr.UserError{Code: builderr.CodeDockerfile, Message: fmt.Sprintf("Dockerfile syntax error on line %d: %s", loc[0].Start.Line, msg), Err: err}
}

// SplitRef splits an image reference into its name and its tag or digest
// ("latest" when it has neither), as the pulling phase shows them.
func SplitRef(ref string) (name, tag string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}
