package triggers_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/registry/reference"
	"github.com/berth-dev/berth/triggers"
)

func ptr[T any](v T) *T { return &v }

func pushEvent(ref, msg string) triggers.PushEvent {
	return triggers.PushEvent{
		Service: "github",
		Metadata: triggers.Metadata{
			Commit:        "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d",
			Ref:           ref,
			DefaultBranch: "main",
			GitURL:        "git@github.com:o/r.git",
			CommitInfo: &triggers.CommitInfo{
				Message: msg,
				Date:    "2024-03-11T09:20:45+01:00",
				Author:  &triggers.User{Username: "monalisa"},
			},
		},
	}
}

func TestPrepareTags(t *testing.T) {
	cases := []struct {
		name string
		cfg  triggers.Config
		ref  string
		want []string
	}{
		{"defaults on the default branch", triggers.Config{}, "refs/heads/main", []string{"main", "latest"}},
		{"defaults on another branch, escaped", triggers.Config{}, "refs/heads/feature/x", []string{"feature_x"}},
		{"tag push", triggers.Config{}, "refs/tags/v1.2.3", []string{"v1.2.3"}},
		{
			"templates first, branch template dropped on tags",
			triggers.Config{TagTemplates: []string{"${commit_info.short_sha}", "${parsed_ref.branch}-${commit_info.short_sha}", "release-${parsed_ref.tag}"}},
			"refs/tags/v2", []string{"9a3c5f7", "release-v2", "v2"},
		},
		{
			"every kind of variable",
			triggers.Config{TagTemplates: []string{"${commit_info.date}", "${commit_info.author.username}", "${commit}", "${commit_sha}", "${ $.parsed_ref.branch }", "${commit_info.committer.username}"}},
			"refs/heads/main", []string{"2024-03-11T09_20_45_01_00", "monalisa", "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d", "main", "latest"},
		},
		{
			"de-duplicated after escaping",
			triggers.Config{TagTemplates: []string{"${parsed_ref.branch}", "feature/x", "feature_x"}},
			"refs/heads/feature/x", []string{"feature_x"},
		},
		{
			"ref tag and latest switched off; no template renders → short sha",
			triggers.Config{DefaultTagFromRef: ptr(false), LatestForDefaultBranch: ptr(false), TagTemplates: []string{"${parsed_ref.tag}"}},
			"refs/heads/main", []string{"9a3c5f7"},
		},
		{"literal template", triggers.Config{TagTemplates: []string{"stable"}, DefaultTagFromRef: ptr(false)}, "refs/heads/main", []string{"stable", "latest"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := triggers.ValidateConfig(c.cfg); err != nil {
				t.Fatalf("ValidateConfig: %v", err)
			}
			p, sk := triggers.Prepare(c.cfg, pushEvent(c.ref, "m"))
			if sk.Skipped() {
				t.Fatalf("skipped: %+v", sk)
			}
			if !slices.Equal(p.Tags, c.want) {
				t.Errorf("Tags = %q, want %q", p.Tags, c.want)
			}
			for _, tag := range p.Tags {
				if reference.ValidateTag(tag) != nil {
					t.Errorf("invalid tag %q", tag)
				}
			}
		})
	}
}

func TestPrepareSkips(t *testing.T) {
	cases := []struct {
		name string
		cfg  triggers.Config
		ref  string
		msg  string
		want triggers.SkipReason
	}{
		{"skip build", triggers.Config{}, "refs/heads/main", "wip [skip build]", triggers.SkipCommitMessage},
		{"build skip", triggers.Config{}, "refs/heads/main", "docs\n\n[build skip]", triggers.SkipCommitMessage},
		{"skip ci is not ours", triggers.Config{}, "refs/heads/main", "[skip ci]", ""},
		{"regex full match passes", triggers.Config{BranchTagRegex: "heads/.+"}, "refs/heads/main", "m", ""},
		{"regex must match the whole ref", triggers.Config{BranchTagRegex: "heads/ma"}, "refs/heads/main", "m", triggers.SkipFiltered},
		{"regex on tags", triggers.Config{BranchTagRegex: `tags/v\d+`}, "refs/heads/v1", "m", triggers.SkipFiltered},
		{"Quay's alternation test", triggers.Config{BranchTagRegex: "(((heads/alpha)|(heads/beta))|(heads/gamma))|(heads/master)"}, "refs/heads/gamma", "m", ""},
		{"Quay's alternation test, no match", triggers.Config{BranchTagRegex: "(((heads/alpha)|(heads/beta))|(heads/gamma))|(heads/master)"}, "refs/heads/delta", "m", triggers.SkipFiltered},
		{"invalid regex at build time", triggers.Config{BranchTagRegex: "("}, "refs/heads/main", "m", triggers.SkipInvalidConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, sk := triggers.Prepare(c.cfg, pushEvent(c.ref, c.msg))
			if sk.Reason != c.want {
				t.Fatalf("skip = %+v, want %q", sk, c.want)
			}
			if sk.Skipped() && sk.Message == "" {
				t.Error("skip without message")
			}
		})
	}
}

func TestPreparePathFilters(t *testing.T) {
	withFiles := func(known bool, files ...string) triggers.PushEvent {
		ev := pushEvent("refs/heads/main", "m")
		ev.Files, ev.FilesKnown = files, known
		return ev
	}
	cases := []struct {
		name     string
		cfg      triggers.Config
		ev       triggers.PushEvent
		skip     bool
		wantStat triggers.PathFilterStatus
	}{
		{"no filters", triggers.Config{}, withFiles(true, "a"), false, triggers.PathFiltersNone},
		{"included matches deep", triggers.Config{IncludedPaths: []string{"src/**"}}, withFiles(true, "README.md", "src/a/b/c.go"), false, triggers.PathFiltersMatched},
		{"included matches none", triggers.Config{IncludedPaths: []string{"src/**"}}, withFiles(true, "README.md", "docs/x.md"), true, ""},
		{"only excluded files changed", triggers.Config{ExcludedPaths: []string{"**/*.md", "/docs/**"}}, withFiles(true, "README.md", "docs/img.png"), true, ""},
		{"an unexcluded file changed", triggers.Config{ExcludedPaths: []string{"**/*.md"}}, withFiles(true, "README.md", "main.go"), false, triggers.PathFiltersMatched},
		{"excluded wins over included", triggers.Config{IncludedPaths: []string{"src/**"}, ExcludedPaths: []string{"src/**/*_test.go"}}, withFiles(true, "src/a_test.go"), true, ""},
		{"no file list: not applied", triggers.Config{IncludedPaths: []string{"src/**"}}, withFiles(false), false, triggers.PathFiltersNotApplied},
		{"empty known list with filters", triggers.Config{IncludedPaths: []string{"**"}}, withFiles(true), true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := triggers.ValidateConfig(c.cfg); err != nil {
				t.Fatal(err)
			}
			p, sk := triggers.Prepare(c.cfg, c.ev)
			if sk.Skipped() != c.skip {
				t.Fatalf("skip = %+v, want skipped=%v", sk, c.skip)
			}
			if c.skip && sk.Reason != triggers.SkipPaths {
				t.Errorf("reason = %q", sk.Reason)
			}
			if !c.skip && p.PathFilters != c.wantStat {
				t.Errorf("PathFilters = %q, want %q", p.PathFilters, c.wantStat)
			}
		})
	}
}

func TestPrepareBuildPaths(t *testing.T) {
	cases := []struct {
		dockerfile, context, wantDF, wantCtx string
	}{
		{"", "", "/Dockerfile", "/"},
		{"/Dockerfile", "/", "/Dockerfile", "/"},
		{"Dockerfile", "", "/Dockerfile", "/"},
		{"/app/Containerfile", "", "/app/Containerfile", "/app"},
		{"/build/Dockerfile", "/app", "/build/Dockerfile", "/app"},
		{"", "app", "/app/Dockerfile", "/app"},
		{"docker/", "", "/docker/Dockerfile", "/docker"},
		{"./a/../b/Dockerfile", "", "/b/Dockerfile", "/b"},
	}
	for _, c := range cases {
		cfg := triggers.Config{DockerfilePath: c.dockerfile, Context: c.context}
		p, sk := triggers.Prepare(cfg, pushEvent("refs/heads/main", "m"))
		if sk.Skipped() || p.DockerfilePath != c.wantDF || p.Context != c.wantCtx {
			t.Errorf("(%q, %q) → (%q, %q) %+v; want (%q, %q)", c.dockerfile, c.context, p.DockerfilePath, p.Context, sk, c.wantDF, c.wantCtx)
		}
	}
}

func TestPrepareCustomGitUsesBuildSource(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	ev, err := triggers.CustomGit{}.Parse(r, fixture(t, "custom-git", "push.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := triggers.Config{BuildSource: "ssh://git@127.0.0.1:2222/srv/app.git", TagTemplates: []string{"${commit_info.short_sha}"}}
	p, sk := triggers.Prepare(cfg, *ev.Push)
	if sk.Skipped() {
		t.Fatal(sk)
	}
	if p.Metadata.GitURL != cfg.BuildSource {
		t.Errorf("git_url = %q", p.Metadata.GitURL)
	}
	if want := []string{"1c002dd", "master", "latest"}; !slices.Equal(p.Tags, want) {
		t.Errorf("Tags = %q, want %q", p.Tags, want)
	}
	if p.DisplayName() != "1c002dd" {
		t.Errorf("DisplayName = %q", p.DisplayName())
	}
	if _, sk := triggers.Prepare(triggers.Config{}, *ev.Push); sk.Reason != triggers.SkipInvalidConfig {
		t.Errorf("custom-git without build_source: %+v", sk)
	}
}

func TestValidateConfigRejects(t *testing.T) {
	cases := []struct {
		name string
		cfg  triggers.Config
		want string
	}{
		{"unknown variable", triggers.Config{TagTemplates: []string{"${commit_info.sha}"}}, "unknown variable ${commit_info.sha}"},
		{"object variable", triggers.Config{TagTemplates: []string{"${commit_info.author}"}}, "did you mean ${commit_info.author.username}"},
		{"unclosed", triggers.Config{TagTemplates: []string{"v-${commit"}}, "unclosed"},
		{"empty template", triggers.Config{TagTemplates: []string{" "}}, "empty template"},
		{"too long", triggers.Config{TagTemplates: []string{strings.Repeat("a", 129) + "${commit}"}}, "exceeds 128"},
		{"bad regex", triggers.Config{BranchTagRegex: "heads/(a"}, "branchtag_regex"},
		{"bad glob", triggers.Config{IncludedPaths: []string{"src/[a"}}, "included_paths"},
		{"context escapes", triggers.Config{Context: "../x"}, "leaves the repository"},
		{"dockerfile escapes", triggers.Config{DockerfilePath: "/a/../../Dockerfile"}, "leaves the repository"},
	}
	for _, c := range cases {
		err := triggers.ValidateConfig(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: ValidateConfig = %v, want it to mention %q", c.name, err, c.want)
		}
	}
	ok := triggers.Config{
		BranchTagRegex: "heads/.+", TagTemplates: append([]string{"x-${commit_info.short_sha}"}, wrapVars()...),
		IncludedPaths: []string{"src/**"}, DockerfilePath: "/Dockerfile", Context: "/",
	}
	if err := triggers.ValidateConfig(ok); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

// wrapVars makes one template per documented variable.
func wrapVars() []string {
	var out []string
	for _, v := range triggers.TemplateVariables() {
		out = append(out, "${"+v+"}")
	}
	return out
}

func TestTemplateVariablesCoverQuay(t *testing.T) {
	want := []string{"commit", "commit_sha", "ref", "default_branch", "git_url", "commit_info.short_sha", "commit_info.url",
		"commit_info.message", "commit_info.date", "commit_info.author.username", "commit_info.author.url",
		"commit_info.author.avatar_url", "commit_info.committer.username", "commit_info.committer.url",
		"commit_info.committer.avatar_url", "parsed_ref.branch", "parsed_ref.tag", "parsed_ref.remote"}
	got := triggers.TemplateVariables()
	for _, v := range want {
		if !slices.Contains(got, v) {
			t.Errorf("missing variable %s", v)
		}
	}
}

func TestEscapeTag(t *testing.T) {
	for in, want := range map[string]string{
		"feature/x":                 "feature_x",
		"-lead":                     "_lead",
		".hidden":                   "_hidden",
		"v1.0-rc.1":                 "v1.0-rc.1",
		"héllo wörld":               "h_llo_w_rld",
		"2015-05-05T19:40:15-04:00": "2015-05-05T19_40_15-04_00",
		strings.Repeat("x", 200):    strings.Repeat("x", 128),
		"":                          "",
	} {
		if got := triggers.EscapeTag(in); got != want {
			t.Errorf("EscapeTag(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrepareCloneURL(t *testing.T) {
	ev := pushEvent("refs/heads/main", "change")
	p, skip := triggers.Prepare(triggers.Config{}, ev)
	if skip.Reason != "" || p.Metadata.GitURL != "git@github.com:o/r.git" {
		t.Fatalf("without clone_url: %q (skip %v)", p.Metadata.GitURL, skip)
	}
	p, skip = triggers.Prepare(triggers.Config{CloneURL: "https://mirror.example/o/r.git"}, ev)
	if skip.Reason != "" || p.Metadata.GitURL != "https://mirror.example/o/r.git" {
		t.Fatalf("with clone_url: %q (skip %v)", p.Metadata.GitURL, skip)
	}
	// custom-git always clones build_source.
	ev.Service = triggers.ServiceCustomGit
	p, _ = triggers.Prepare(triggers.Config{BuildSource: "git://h/r", CloneURL: "https://other/r"}, ev)
	if p.Metadata.GitURL != "git://h/r" {
		t.Fatalf("custom-git cloned %q", p.Metadata.GitURL)
	}
}

// A Bitbucket build clones the link recorded from the repository's API at
// activation, not git@bitbucket.org; clone_url still overrides it, and
// other services ignore a forge_git_url they were given.
func TestPrepareBitbucketClonesTheRecordedLink(t *testing.T) {
	ev := pushEvent("refs/heads/main", "change")
	ev.Service = triggers.ServiceBitbucket
	ev.Metadata.GitURL = "git@bitbucket.org:o/r.git"
	recorded := triggers.Config{ForgeGitURL: "ssh://git@git.corp.example:7999/o/r.git"}
	p, skip := triggers.Prepare(recorded, ev)
	if skip.Reason != "" || p.Metadata.GitURL != "ssh://git@git.corp.example:7999/o/r.git" {
		t.Fatalf("recorded link: %q (skip %v)", p.Metadata.GitURL, skip)
	}
	recorded.CloneURL = "https://mirror.example/o/r.git"
	if p, _ = triggers.Prepare(recorded, ev); p.Metadata.GitURL != "https://mirror.example/o/r.git" {
		t.Fatalf("clone_url beside the recorded link: %q", p.Metadata.GitURL)
	}
	ev = pushEvent("refs/heads/main", "change")
	if p, _ = triggers.Prepare(triggers.Config{ForgeGitURL: "ssh://elsewhere/o/r.git"}, ev); p.Metadata.GitURL != "git@github.com:o/r.git" {
		t.Fatalf("a GitHub trigger took forge_git_url: %q", p.Metadata.GitURL)
	}
}

// One rule names the URL a trigger's builds clone, for Prepare and for the
// manual run alike.
func TestGitURL(t *testing.T) {
	for _, c := range []struct {
		name, service string
		cfg           triggers.Config
		forgeHost     string
		want          string
	}{
		{"custom-git clones build_source", triggers.ServiceCustomGit,
			triggers.Config{BuildSource: "git://h/r", CloneURL: "https://other/r"}, "", "git://h/r"},
		{"clone_url first", triggers.ServiceGitHub,
			triggers.Config{BuildSource: "o/r", CloneURL: "https://mirror/r.git"}, "github.com", "https://mirror/r.git"},
		{"recorded link of a forge whose API names it", triggers.ServiceBitbucket,
			triggers.Config{BuildSource: "o/r", ForgeGitURL: "ssh://git@corp:7999/o/r.git"}, "bitbucket.org", "ssh://git@corp:7999/o/r.git"},
		{"recorded link ignored elsewhere", triggers.ServiceGitHub,
			triggers.Config{BuildSource: "o/r", ForgeGitURL: "ssh://elsewhere/o/r.git"}, "github.com", "git@github.com:o/r.git"},
		{"forge SSH URL without the web port", triggers.ServiceGitHub,
			triggers.Config{BuildSource: "octo/app"}, "ghe.example.com:8443", "git@ghe.example.com:octo/app.git"},
		{"no build_source", triggers.ServiceGitLab, triggers.Config{}, "gitlab.com", ""},
		{"no forge host: the payload decides", triggers.ServiceGitHub, triggers.Config{BuildSource: "o/r"}, "", ""},
	} {
		if got := triggers.GitURL(c.service, c.cfg, c.forgeHost); got != c.want {
			t.Errorf("%s: GitURL = %q, want %q", c.name, got, c.want)
		}
	}
}
