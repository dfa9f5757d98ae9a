package dockerfile

import (
	"bytes"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/berth-dev/berth/internal/builderr"
)

// WithBuildArgs returns the Dockerfile with the build arguments written
// into it: every ARG instruction that declares one of them gets its value
// as the declaration's default, which is what --build-arg does. The build
// engine then reads the values from a file no RUN step can see, instead of
// from its command line, which every process on the host may read.
//
// shown maps each rewritten instruction, as the engine prints it in its step
// headers and errors, to the original instruction, so that the log shows
// what the user wrote and never the values. Arguments no ARG declares are
// not used, as with --build-arg. A value with a line break cannot be written
// on an ARG line and is refused as a user error.
func WithBuildArgs(content []byte, args map[string]string) (rewritten []byte, shown map[string]string, err error) {
	if len(args) == 0 {
		return content, nil, nil
	}
	for _, k := range sortedArgNames(args) {
		if strings.ContainsAny(args[k], "\n\r") {
			return nil, nil, builderr.Errorf(builderr.CodeDockerfile, "the build argument %s contains a line break, which an ARG value cannot hold", k)
		}
	}
	res, err := parser.Parse(bytes.NewReader(content))
	if err != nil {
		return nil, nil, syntaxError(err)
	}
	lines := strings.SplitAfter(string(content), "\n")
	shown = map[string]string{}
	// Replace from the end, so earlier line numbers stay valid.
	nodes := res.AST.Children
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		if !strings.EqualFold(n.Value, "arg") || n.StartLine < 1 || n.EndLine > len(lines) {
			continue
		}
		var words []string
		changed := false
		for w := n.Next; w != nil; w = w.Next {
			name, _, _ := strings.Cut(w.Value, "=")
			if v, ok := args[name]; ok {
				words = append(words, name+"="+quoteArgValue(v))
				changed = true
				continue
			}
			words = append(words, w.Value)
		}
		if !changed {
			continue
		}
		keyword := strings.Fields(strings.TrimSpace(lines[n.StartLine-1]))[0]
		line := keyword + " " + strings.Join(words, " ")
		shown[line] = strings.TrimSpace(n.Original)
		eol := "\n"
		if last := lines[n.EndLine-1]; !strings.HasSuffix(last, "\n") {
			eol = ""
		}
		lines = append(lines[:n.StartLine-1], append([]string{line + eol}, lines[n.EndLine:]...)...)
	}
	return []byte(strings.Join(lines, "")), shown, nil
}

// quoteArgValue quotes a value so that the Dockerfile reads it back
// unchanged: single quotes (no escapes, no variable expansion inside), and
// a single quote itself as a double-quoted one between them.
func quoteArgValue(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'"'"'`) + "'"
}

func sortedArgNames(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// HideValues rewrites a line of engine output that quotes a rewritten
// instruction so that it shows the original one.
func HideValues(line string, shown map[string]string) string {
	for rewritten, original := range shown {
		if strings.Contains(line, rewritten) {
			line = strings.ReplaceAll(line, rewritten, original)
		}
	}
	return line
}
