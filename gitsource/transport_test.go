package gitsource

import (
	"strings"
	"testing"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

func TestParseEndpoint(t *testing.T) {
	for raw, want := range map[string]string{
		"git@github.com:org/app.git":            "ssh github.com git",
		"ssh://deploy@git.example.com:2222/app": "ssh git.example.com deploy",
		"https://gitlab.example.com/g/app.git":  "https gitlab.example.com ",
		"http://127.0.0.1:8080/app.git":         "http 127.0.0.1 ",
		"git://127.0.0.1/app.git":               "git 127.0.0.1 ",
	} {
		ep, err := parseEndpoint(raw)
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		if got := ep.Protocol + " " + ep.Host + " " + ep.User; got != want {
			t.Errorf("%s parsed as %q, want %q", raw, got, want)
		}
	}
	for _, raw := range []string{"file:///etc", "/srv/git/app.git", "./app", "", "git@[::1]:x.git", "ssh://-oProxyCommand=x/y.git"} {
		if ep, err := parseEndpoint(raw); err == nil {
			t.Errorf("%s accepted as %s", raw, ep.Protocol)
		}
	}
}

func TestTokenStaysOnItsHost(t *testing.T) {
	src := Source{URL: "https://git.example.com/app.git", Username: "u", Password: "token"}
	base, err := parseEndpoint(src.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &fetcher{src: src, base: base}
	for raw, wantAuth := range map[string]bool{
		"https://git.example.com/lib.git":      true,
		"https://GIT.example.com/lib.git":      true,
		"https://other.example.com/lib.git":    false,
		"http://git.example.com/lib.git":       false,
		"https://git.example.com:8443/lib.git": false,
		"git://git.example.com/lib.git":        false,
	} {
		ep, err := parseEndpoint(raw)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := f.auth(ep, raw)
		if err != nil {
			t.Fatal(err)
		}
		basic, ok := auth.(*githttp.BasicAuth)
		if ok != wantAuth {
			t.Errorf("%s: credentials sent = %v, want %v", raw, ok, wantAuth)
		}
		if ok && (basic.Username != "u" || basic.Password != "token") {
			t.Errorf("%s: credentials %s", raw, basic)
		}
	}
	// SSH without a deploy key and known_hosts is refused, not attempted
	// with whatever the machine has.
	ep, err := parseEndpoint("git@git.example.com:lib.git")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.auth(ep, "git@git.example.com:lib.git"); err == nil {
		t.Error("an SSH submodule of an HTTPS source got credentials")
	}
}

func TestResolveSubmoduleURL(t *testing.T) {
	for _, c := range []struct{ parent, sub, want string }{
		{"https://h.example/org/app.git", "../lib.git", "https://h.example/org/lib.git"},
		{"https://h.example/org/app.git/", "../lib.git", "https://h.example/org/lib.git"},
		{"https://h.example/org/app.git", "../../other/lib.git", "https://h.example/other/lib.git"},
		{"https://h.example/org/app", "./sub", "https://h.example/org/app/sub"},
		{"git://127.0.0.1:9418/app.git", "../lib.git", "git://127.0.0.1:9418/lib.git"},
		{"ssh://git@h.example:2222/srv/app.git", "../lib.git", "ssh://git@h.example:2222/srv/lib.git"},
		{"git@h.example:org/app.git", "../lib.git", "git@h.example:org/lib.git"},
		{"git@h.example:app.git", "../lib.git", "git@h.example:lib.git"},
		{"https://h.example/org/app.git", "https://cdn.example/lib.git", "https://cdn.example/lib.git"},
		{"https://h.example/org/app.git", "git@h.example:org/lib.git", "git@h.example:org/lib.git"},
	} {
		got, err := resolveSubmoduleURL(c.parent, c.sub)
		if err != nil {
			t.Errorf("%s + %s: %v", c.parent, c.sub, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s + %s = %s, want %s", c.parent, c.sub, got, c.want)
		}
	}
	if got, err := resolveSubmoduleURL("https://h.example/app.git", "../../../x.git"); err == nil {
		t.Errorf("climbing above the host gave %s", got)
	}
}

func TestRedact(t *testing.T) {
	got := redact("https://user:s3cret@h.example/app.git")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "h.example/app.git") {
		t.Fatalf("redact = %s", got)
	}
	if got := redact("git@h.example:app.git"); got != "git@h.example:app.git" {
		t.Fatalf("redact changed an scp-like URL: %s", got)
	}
}

func TestProgressWriter(t *testing.T) {
	var lines []string
	w := newProgressWriter(func(s string) { lines = append(lines, s) })
	// Updates rewritten in place within progressInterval collapse into
	// the first and the final line; a line split across writes is whole.
	for _, chunk := range []string{
		"Counting objects:  10% (1/10)\r",
		"Counting objects:  50% (5/10)\r",
		"Counting objects: 100% (10/10), do", "ne.\n",
		"\n",
		"Total 10 (delta 0)",
	} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	want := []string{"Counting objects:  10% (1/10)", "Counting objects: 100% (10/10), done.", "Total 10 (delta 0)"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Fatalf("lines %q, want %q", lines, want)
	}

	lines = nil
	w.last = time.Now().Add(-progressInterval)
	if _, err := w.Write([]byte("Receiving objects: 42%\r")); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 {
		t.Fatalf("a progress update after %s was not logged: %q", progressInterval, lines)
	}
}
