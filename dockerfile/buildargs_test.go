package dockerfile

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/berth-dev/berth/internal/builderr"
)

func TestWithBuildArgs(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\n" +
		"ARG BASE=busybox\n" +
		"FROM $BASE AS build\n" +
		"arg TOKEN \\\n" +
		"    KEEP=kept\n" +
		"RUN echo \"$TOKEN\"\n" +
		"ARG UNUSED=1\n" +
		"FROM build\n" +
		"ARG TOKEN"
	args := map[string]string{"TOKEN": `it's "a" $secret \ value`, "BASE": "registry.example/base:1", "NOT_DECLARED": "x"}
	out, shown, err := WithBuildArgs([]byte(src), args)
	if err != nil {
		t.Fatal(err)
	}
	want := "# syntax=docker/dockerfile:1\n" +
		"ARG BASE='registry.example/base:1'\n" +
		"FROM $BASE AS build\n" +
		"arg TOKEN='it'\"'\"'s \"a\" $secret \\ value' KEEP=kept\n" +
		"RUN echo \"$TOKEN\"\n" +
		"ARG UNUSED=1\n" +
		"FROM build\n" +
		"ARG TOKEN='it'\"'\"'s \"a\" $secret \\ value'"
	if string(out) != want {
		t.Fatalf("rewritten =\n%s\nwant\n%s", out, want)
	}
	// The values read back exactly as given, as the engine's parser sees them.
	got := argValues(t, out)
	for _, k := range []string{"TOKEN", "BASE"} {
		if got[k] != args[k] {
			t.Errorf("%s reads back as %q, want %q", k, got[k], args[k])
		}
	}
	if got["KEEP"] != "kept" || got["UNUSED"] != "1" {
		t.Errorf("untouched defaults changed: %v", got)
	}
	// The log shows what the user wrote in place of each rewritten line.
	line := "STEP 4/9: arg TOKEN='it'\"'\"'s \"a\" $secret \\ value' KEEP=kept"
	if h := HideValues(line, shown); strings.Contains(h, "secret") || !strings.Contains(h, "arg TOKEN") || !strings.Contains(h, "KEEP=kept") {
		t.Errorf("HideValues(%q) = %q", line, h)
	}
	if h := HideValues("plain output", shown); h != "plain output" {
		t.Errorf("HideValues changed an unrelated line: %q", h)
	}
}

func TestWithBuildArgsRefusesLineBreaks(t *testing.T) {
	_, _, err := WithBuildArgs([]byte("FROM x\nARG K\n"), map[string]string{"K": "a\nRUN evil"})
	ue, ok := builderr.AsUserError(err)
	if !ok || ue.Code != builderr.CodeDockerfile || !strings.Contains(ue.Message, "K") {
		t.Fatalf("err = %v, want a dockerfile user error naming K", err)
	}
}

func TestWithBuildArgsNone(t *testing.T) {
	src := []byte("FROM x\nARG K\n")
	out, shown, err := WithBuildArgs(src, nil)
	if err != nil || !bytes.Equal(out, src) || len(shown) != 0 {
		t.Fatalf("without arguments: %q %v %v", out, shown, err)
	}
}

func TestParseCopyFromImages(t *testing.T) {
	src := "FROM reg.example/a:1 AS one\n" +
		"COPY --from=reg.example/tools:2 /bin/x /x\n" +
		"RUN --mount=type=bind,from=reg.example/cache:3,target=/c true\n" +
		"FROM scratch\n" +
		"COPY --from=0 /z /z\n" +
		"COPY --from=reg.example/tools:2 /bin/x /x\n" +
		"COPY --from=one /y /y\n"
	info, err := Parse([]byte(src), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"reg.example/a:1", "reg.example/tools:2", "reg.example/cache:3"}
	if strings.Join(info.BaseImages, " ") != strings.Join(want, " ") {
		t.Errorf("BaseImages = %v, want %v", info.BaseImages, want)
	}
}

// argValues expands every ARG of a Dockerfile the way a build does and
// returns the last value of each.
func argValues(t testing.TB, content []byte) map[string]string {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{}
	for _, n := range res.AST.Children {
		cmd, err := instructions.ParseInstruction(n)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := cmd.(*instructions.ArgCommand)
		if !ok {
			continue
		}
		for _, kv := range a.Args {
			if kv.Value == nil {
				continue
			}
			v, _, err := shell.NewLex(res.EscapeToken).ProcessWord(*kv.Value, argEnv(vals))
			if err != nil {
				t.Fatal(err)
			}
			vals[kv.Key] = v
		}
	}
	return vals
}

// FuzzWithBuildArgs: whatever the value, the rewritten Dockerfile parses,
// declares the same instructions, and gives the ARG back unchanged.
func FuzzWithBuildArgs(f *testing.F) {
	f.Add("plain")
	f.Add(`it's "quoted" $HOME \ and ${X:-y}`)
	f.Add("")
	f.Add("'")
	f.Add("`")
	f.Fuzz(func(t *testing.T, value string) {
		if !utf8.ValidString(value) || strings.ContainsAny(value, "\x00") {
			t.Skip()
		}
		src := []byte("FROM x\nARG K\nRUN echo $K\n")
		out, _, err := WithBuildArgs(src, map[string]string{"K": value})
		if strings.ContainsAny(value, "\r\n") {
			if err == nil {
				t.Fatalf("a value with a line break was written: %q", out)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		res, err := parser.Parse(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("rewritten Dockerfile does not parse: %v\n%s", err, out)
		}
		if len(res.AST.Children) != 3 {
			t.Fatalf("rewritten Dockerfile has %d instructions, want 3:\n%s", len(res.AST.Children), out)
		}
		if got := argValues(t, out)["K"]; got != value {
			t.Fatalf("K reads back as %q, want %q\n%s", got, value, out)
		}
	})
}
