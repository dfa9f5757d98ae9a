package triggers_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/registry/reference"
	"github.com/berth-dev/berth/triggers"
)

func FuzzRenderTemplate(f *testing.F) {
	for _, s := range []string{"${commit_info.short_sha}", "${parsed_ref.branch}-${commit}", "v${", "$${}}", "${}", "-${commit_info.date}/x", "é${ref}"} {
		f.Add(s, "refs/heads/feature/x", "0123456789abcdef")
	}
	f.Fuzz(func(t *testing.T, tmpl, ref, commit string) {
		md := triggers.Metadata{Commit: commit, Ref: ref, DefaultBranch: "main", GitURL: "g",
			CommitInfo: &triggers.CommitInfo{Message: tmpl, Date: ref, Author: &triggers.User{Username: ref}}}
		tag, ok, err := triggers.RenderTag(tmpl, md)
		if err != nil && (ok || tag != "") {
			t.Fatalf("error %v with a tag %q", err, tag)
		}
		if ok && reference.ValidateTag(tag) != nil {
			t.Fatalf("RenderTag(%q) = %q, not a valid tag", tmpl, tag)
		}
		if err == nil && triggers.ValidateConfig(triggers.Config{TagTemplates: []string{tmpl}}) == nil {
			p, sk := triggers.Prepare(triggers.Config{TagTemplates: []string{tmpl}}, triggers.PushEvent{Metadata: md})
			for _, tg := range p.Tags {
				if reference.ValidateTag(tg) != nil {
					t.Fatalf("Prepare tag %q invalid (skip %+v)", tg, sk)
				}
			}
		}
	})
}

func fuzzSeeds(f *testing.F, service string) {
	files, _ := filepath.Glob(filepath.Join("testdata", service, "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
}

// fuzzParse checks a provider never panics, fails only with ErrMalformed,
// and that every push it accepts prepares into valid tags or a reasoned skip.
func fuzzParse(t *testing.T, p triggers.Provider, header, event string, body []byte) {
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set(header, event)
	ev, err := p.Parse(r, body)
	if err != nil {
		if !errors.Is(err, triggers.ErrMalformed) {
			t.Fatalf("Parse error %v is not ErrMalformed", err)
		}
		return
	}
	if (ev.Push == nil) == !ev.Skip.Skipped() {
		t.Fatalf("event is neither or both push and skip: %+v", ev)
	}
	if ev.Push == nil {
		return
	}
	prep, sk := triggers.Prepare(triggers.Config{BuildSource: "git@h:r.git", TagTemplates: []string{"${commit_info.short_sha}", "${commit_info.author.username}"}}, *ev.Push)
	if sk.Skipped() {
		if sk.Message == "" {
			t.Fatal("skip without message")
		}
		return
	}
	if len(prep.Tags) == 0 {
		t.Fatal("prepared build without tags")
	}
	for _, tg := range prep.Tags {
		if reference.ValidateTag(tg) != nil {
			t.Fatalf("invalid tag %q", tg)
		}
	}
}

func FuzzParseCustomGit(f *testing.F) {
	fuzzSeeds(f, "custom-git")
	f.Fuzz(func(t *testing.T, body []byte) { fuzzParse(t, triggers.CustomGit{}, "X-Unused", "", body) })
}

func FuzzParseGitHub(f *testing.F) {
	fuzzSeeds(f, "github")
	f.Fuzz(func(t *testing.T, body []byte) { fuzzParse(t, triggers.GitHub{}, "X-GitHub-Event", "push", body) })
}

func FuzzParseGitLab(f *testing.F) {
	fuzzSeeds(f, "gitlab")
	f.Fuzz(func(t *testing.T, body []byte) { fuzzParse(t, triggers.GitLab{}, "X-Gitlab-Event", "Push Hook", body) })
}

func FuzzParseBitbucket(f *testing.F) {
	fuzzSeeds(f, "bitbucket")
	f.Fuzz(func(t *testing.T, body []byte) { fuzzParse(t, triggers.Bitbucket{}, "X-Event-Key", "repo:push", body) })
}

// FuzzBaseImages feeds analyze's Dockerfile reader arbitrary files: it
// must not panic, and every base it reports is a pulled image (never
// scratch, never an earlier stage) with a line and a host.
func FuzzBaseImages(f *testing.F) {
	for _, s := range []string{
		"FROM busybox\n",
		"ARG NS=alice\nFROM quay.example.com/${NS}/base:1 AS b\nFROM b\nCOPY --from=b /x /x\n",
		"FROM scratch\nFROM localhost:5000/a/b@sha256:0123\n",
		"ARG BASE\nFROM $BASE\n",
		"# syntax=docker/dockerfile:1\nFROM --platform=$BUILDPLATFORM golang:1 AS build\nRUN <<EOF\necho hi\nEOF\n",
		"FROM a b c\n", "", "\x00FROM\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		bases, err := triggers.BaseImages(content)
		if err != nil {
			if len(bases) != 0 {
				t.Fatalf("error %v with bases %+v", err, bases)
			}
			return
		}
		for _, b := range bases {
			if b.Ref == "" || b.Line < 1 || b.Host == "" || strings.EqualFold(b.Ref, "scratch") {
				t.Fatalf("base %+v of %q", b, content)
			}
		}
	})
}
