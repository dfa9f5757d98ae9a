package dockerfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/builderr"
)

func TestParseBaseImages(t *testing.T) {
	cases := []struct {
		name   string
		df     string
		args   map[string]string
		target string
		want   []string
	}{
		{"single", "FROM busybox:1.36\nRUN true\n", nil, "", []string{"busybox:1.36"}},
		{"arg default", "ARG BASE=reg.example:5000/lib/busy\nARG TAG=v1\nFROM ${BASE}:$TAG\n", nil, "", []string{"reg.example:5000/lib/busy:v1"}},
		{"arg overridden", "ARG BASE=busybox\nFROM $BASE\n", map[string]string{"BASE": "alpine:3", "UNUSED": "x"}, "", []string{"alpine:3"}},
		{"arg default from arg", "ARG R=r.io\nARG IMG=${R}/x\nFROM $IMG\n", nil, "", []string{"r.io/x"}},
		{"scratch", "FROM scratch\nCOPY a /\n", nil, "", nil},
		{"stages", "FROM golang:1 AS Build\nRUN go version\nFROM build AS test\nFROM alpine\nCOPY --from=build /x /x\n", nil, "", []string{"golang:1", "alpine"}},
		{"target", "FROM a AS one\nFROM b AS two\nFROM c\n", nil, "two", []string{"a", "b"}},
		{"repeated", "FROM a\nFROM a\n", nil, "", []string{"a"}},
		{"digest", "FROM r.io/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", nil, "", []string{"r.io/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}},
		{"platform flag", "FROM --platform=linux/amd64 busybox\n", nil, "", []string{"busybox"}},
		{"comments and escapes", "# syntax=docker/dockerfile:1\n\n# a comment\nFROM \\\n  busybox\nRUN echo a \\\n  b\n", nil, "", []string{"busybox"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, err := Parse([]byte(c.df), c.args, c.target)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(info.BaseImages, c.want) {
				t.Errorf("BaseImages = %q, want %q", info.BaseImages, c.want)
			}
		})
	}
}

func TestParseStages(t *testing.T) {
	info, err := Parse([]byte("ARG V=1\n\nFROM busybox AS First\nRUN true\nFROM first\n"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []Stage{{Name: "first", Base: "busybox", Line: 3}, {Name: "", Base: "first", Line: 5}}
	if !reflect.DeepEqual(info.Stages, want) {
		t.Errorf("Stages = %+v, want %+v", info.Stages, want)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, df, target string
		want             string
	}{
		{"empty", "\n  \n", "", "empty"},
		{"only comments", "# nothing\n", "", "no instructions"},
		{"unknown instruction", "FROM busybox\nRUN true\nFRUM x\n", "", "line 3"},
		{"no from", "RUN true\n", "", "line 1"},
		{"bad from", "FROM a b\n", "", "line 1"},
		{"bad stage name", "FROM a AS 1x\n", "", "line 1"},
		{"unterminated heredoc", "FROM a\nRUN <<EOF\necho\n", "", "line 2"},
		{"bad flag", "FROM busybox\nCOPY --nope=1 a b\n", "", "line 2"},
		{"missing target", "FROM a AS x\n", "y", `target stage "y"`},
		{"empty base", "ARG BASE\nFROM $BASE\n", "", "line 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.df), nil, c.target)
			ue, ok := builderr.AsUserError(err)
			if !ok {
				t.Fatalf("err = %v, want a user error", err)
			}
			if ue.Code != builderr.CodeDockerfile || !strings.Contains(ue.Message, c.want) {
				t.Errorf("err = %s %q, want code dockerfile mentioning %q", ue.Code, ue.Message, c.want)
			}
		})
	}
}

func TestSplitRef(t *testing.T) {
	cases := map[string][2]string{
		"busybox":                 {"busybox", "latest"},
		"busybox:1":               {"busybox", "1"},
		"localhost:5000/a/b":      {"localhost:5000/a/b", "latest"},
		"localhost:5000/a/b:v2":   {"localhost:5000/a/b", "v2"},
		"r.io/a@sha256:abc":       {"r.io/a", "sha256:abc"},
		"localhost:5000/a:t@sha1": {"localhost:5000/a:t", "sha1"},
	}
	for ref, want := range cases {
		name, tag := SplitRef(ref)
		if name != want[0] || tag != want[1] {
			t.Errorf("SplitRef(%q) = %q, %q; want %q, %q", ref, name, tag, want[0], want[1])
		}
	}
}

func TestParseUnresolvedArgs(t *testing.T) {
	df := "ARG NS\nARG TAG=1\nARG EMPTY=\nFROM reg.example/$NS/app:$TAG AS a\nFROM busybox:$TAG$EMPTY\nFROM $UNDECLARED/x\n"
	info, err := Parse([]byte(df), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []Stage{
		{Name: "a", Base: "reg.example//app:1", Line: 4, Unresolved: []string{"NS"}},
		{Base: "busybox:1", Line: 5},
		{Base: "/x", Line: 6, Unresolved: []string{"UNDECLARED"}},
	}
	if !reflect.DeepEqual(info.Stages, want) {
		t.Errorf("Stages = %+v, want %+v", info.Stages, want)
	}
	// A value given as a build argument resolves it.
	info, err = Parse([]byte(df), map[string]string{"NS": "team"}, "")
	if err != nil || info.Stages[0].Base != "reg.example/team/app:1" || info.Stages[0].Unresolved != nil {
		t.Errorf("with NS given: %+v, %v", info, err)
	}

	for _, df := range []string{"ARG BASE\nFROM $BASE\n", "FROM ${NOPE}\n"} {
		_, err := Parse([]byte(df), nil, "")
		if !errors.Is(err, ErrUnresolvedArg) {
			t.Errorf("%q: %v, want ErrUnresolvedArg", df, err)
		}
	}
	if _, err := Parse([]byte("ARG BASE=\nFROM $BASE\n"), nil, ""); err == nil || errors.Is(err, ErrUnresolvedArg) {
		t.Errorf("an ARG whose default is empty: %v, want an error without ErrUnresolvedArg", err)
	}
}

func TestParseNoFrom(t *testing.T) {
	for _, df := range []string{"", " \n\n", "ARG X=1\n"} {
		if _, err := Parse([]byte(df), nil, ""); !errors.Is(err, ErrNoFrom) {
			t.Errorf("%q: %v, want ErrNoFrom", df, err)
		}
	}
	if _, err := Parse([]byte("FROM a b\n"), nil, ""); err == nil || errors.Is(err, ErrNoFrom) {
		t.Errorf("a syntax error: %v, want an error without ErrNoFrom", err)
	}
}
