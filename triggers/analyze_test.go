package triggers_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/berth-dev/berth/dockerfile"
	"github.com/berth-dev/berth/triggers"
)

func TestBaseImages(t *testing.T) {
	df := `ARG NS
ARG TAG=3
FROM golang:1.22 AS build
FROM Build AS test
FROM quay.example.com:8443/team/base:$TAG AS runtime
FROM scratch
FROM localhost/ns/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
FROM reg.example/$NS/app
FROM runtime
`
	got, err := triggers.BaseImages([]byte(df))
	if err != nil {
		t.Fatal(err)
	}
	want := []triggers.BaseImage{
		{Ref: "golang:1.22", Line: 3, Host: "docker.io", Repository: "golang"},
		{Ref: "quay.example.com:8443/team/base:3", Line: 5, Host: "quay.example.com:8443", Repository: "team/base"},
		{Ref: "localhost/ns/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Line: 7, Host: "localhost", Repository: "ns/app"},
		{Ref: "reg.example//app", Line: 8, Host: "reg.example", Repository: "/app", Unresolved: []string{"NS"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("BaseImages =\n%+v\nwant\n%+v", got, want)
	}

	// A stage name only counts once it is defined: a FROM naming a later
	// stage (or an image that happens to share its name) pulls.
	got, err = triggers.BaseImages([]byte("FROM base\nFROM busybox AS base\n"))
	if err != nil || len(got) != 2 || got[0].Ref != "base" {
		t.Errorf("FROM before the stage it names: %+v, %v", got, err)
	}
	if _, err := triggers.BaseImages([]byte("# nothing but ARG\nARG X=1\n")); !errors.Is(err, dockerfile.ErrNoFrom) {
		t.Errorf("no FROM: %v, want dockerfile.ErrNoFrom", err)
	}
	if _, err := triggers.BaseImages([]byte("FROM $BASE\n")); !errors.Is(err, dockerfile.ErrUnresolvedArg) {
		t.Errorf("FROM $BASE: %v, want dockerfile.ErrUnresolvedArg", err)
	}
	if _, err := triggers.BaseImages([]byte("FROM a b c\n")); err == nil {
		t.Error("a malformed FROM parsed")
	}
}

func TestInContext(t *testing.T) {
	for _, c := range []struct {
		cfg    triggers.Config
		df, cx string
		inside bool
	}{
		{triggers.Config{}, "/Dockerfile", "/", true},
		{triggers.Config{DockerfilePath: "/sub/Dockerfile"}, "/sub/Dockerfile", "/sub", true},
		{triggers.Config{DockerfilePath: "sub/deep/Dockerfile", Context: "/sub/"}, "/sub/deep/Dockerfile", "/sub", true},
		{triggers.Config{DockerfilePath: "/Dockerfile", Context: "/sub"}, "/Dockerfile", "/sub", false},
		{triggers.Config{DockerfilePath: "/subway/Dockerfile", Context: "/sub"}, "/subway/Dockerfile", "/sub", false},
	} {
		df, cx, err := triggers.BuildPaths(c.cfg)
		if err != nil || df != c.df || cx != c.cx {
			t.Errorf("BuildPaths(%+v) = %q, %q, %v; want %q, %q", c.cfg, df, cx, err, c.df, c.cx)
			continue
		}
		if got := triggers.InContext(df, cx); got != c.inside {
			t.Errorf("InContext(%q, %q) = %v, want %v", df, cx, got, c.inside)
		}
	}
	if _, _, err := triggers.BuildPaths(triggers.Config{DockerfilePath: "../Dockerfile"}); err == nil {
		t.Error("a Dockerfile above the repository root was accepted")
	}
}
