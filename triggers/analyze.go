package triggers

import (
	"strings"

	"github.com/berth-dev/berth/dockerfile"
)

// BuildPaths resolves a config's Dockerfile and context as its builds use
// them: clean and absolute from the repository root ("/sub/Dockerfile",
// "/"). A path leaving the repository is an error.
func BuildPaths(cfg Config) (dockerfilePath, context string, err error) {
	return buildPaths(cfg)
}

// InContext reports whether the Dockerfile at dockerfilePath lies inside
// the context directory (both as BuildPaths returns them).
func InContext(dockerfilePath, context string) bool {
	return context == "/" || strings.HasPrefix(dockerfilePath, strings.TrimSuffix(context, "/")+"/")
}

// BaseImage is an image a Dockerfile stage starts from.
type BaseImage struct {
	// Ref is the FROM's image reference, build arguments applied.
	Ref string
	// Line is the FROM's line (1-based).
	Line int
	// Host is the registry host, lower-cased, as container tools decide
	// it: the first path component when it looks like a host, else
	// "docker.io".
	Host string
	// Repository is the path below Host, without tag or digest.
	Repository string
	// Unresolved are the build arguments the FROM uses that have no value;
	// trigger builds pass none, so such a base is likely not what was
	// meant.
	Unresolved []string
}

// BaseImages parses a Dockerfile and returns the images its stages start
// from, in order: every FROM that names neither an earlier stage nor
// scratch. A FROM that builds on an earlier stage needs no pull, so it
// needs no credentials either. Errors are dockerfile.Parse's
// (dockerfile.ErrNoFrom and dockerfile.ErrUnresolvedArg in their chain
// when they apply).
func BaseImages(content []byte) ([]BaseImage, error) {
	info, err := dockerfile.Parse(content, nil, "")
	if err != nil {
		return nil, err
	}
	var out []BaseImage
	stages := map[string]bool{}
	for _, s := range info.Stages {
		if !stages[strings.ToLower(s.Base)] && !strings.EqualFold(s.Base, "scratch") {
			host, repo := splitHost(s.Base)
			out = append(out, BaseImage{Ref: s.Base, Line: s.Line, Host: host, Repository: repo, Unresolved: s.Unresolved})
		}
		if s.Name != "" {
			stages[strings.ToLower(s.Name)] = true
		}
	}
	return out, nil
}

// splitHost splits an image reference into its registry host and the
// repository path below it (tag and digest dropped).
func splitHost(ref string) (host, repo string) {
	name, _ := dockerfile.SplitRef(ref)
	first, rest, ok := strings.Cut(name, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return strings.ToLower(first), rest
	}
	return "docker.io", name
}
