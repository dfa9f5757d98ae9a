package triggers_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/triggers"
)

func TestCustomGitSchema(t *testing.T) {
	cases := []struct {
		name, body string
		wantErr    string // substring of the schema error; "" means accepted
	}{
		{"minimal", `{"commit":"abcdef0","ref":"refs/heads/x","default_branch":"x"}`, ""},
		{"extra keys and odd URLs pass", `{"commit":"abcdef0","ref":"refs/remotes/origin/x","default_branch":"x","extra":1,
			"commit_info":{"url":"not a url","message":"m","date":"whenever"}}`, ""},
		{"missing commit", `{"ref":"refs/heads/x","default_branch":"x"}`, "commit: required"},
		{"missing default_branch", `{"commit":"abcdef0","ref":"refs/heads/x"}`, "default_branch: required"},
		{"commit not a string", `{"commit":1234567,"ref":"refs/heads/x","default_branch":"x"}`, "commit: want a string"},
		{"short commit", `{"commit":"abc","ref":"refs/heads/x","default_branch":"x"}`, "at least 7 hex"},
		{"non-hex commit", `{"commit":"zzzzzzz","ref":"refs/heads/x","default_branch":"x"}`, "at least 7 hex"},
		{"bad ref", `{"commit":"abcdef0","ref":"heads/x","default_branch":"x"}`, "ref: want"},
		{"commit_info not object", `{"commit":"abcdef0","ref":"refs/heads/x","default_branch":"x","commit_info":"m"}`, "commit_info: want an object"},
		{"commit_info without message", `{"commit":"abcdef0","ref":"refs/heads/x","default_branch":"x","commit_info":{"url":"u","date":"d"}}`, "commit_info.message: required"},
		{"author without avatar", `{"commit":"abcdef0","ref":"refs/heads/x","default_branch":"x",
			"commit_info":{"url":"u","date":"d","message":"m","author":{"username":"a","url":"u"}}}`, "commit_info.author.avatar_url: required"},
		{"null document", `null`, "not a JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			ev, err := triggers.CustomGit{}.Parse(r, []byte(c.body))
			if c.wantErr == "" {
				if err != nil || ev.Push == nil {
					t.Fatalf("Parse = %+v, %v; want a push", ev, err)
				}
				if ev.Push.FilesKnown {
					t.Error("custom-git payloads carry no file list")
				}
				return
			}
			if !errors.Is(err, triggers.ErrMalformed) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Parse = %v, want ErrMalformed mentioning %q", err, c.wantErr)
			}
		})
	}
}

func TestGitHubFormEncodedPayload(t *testing.T) {
	body := []byte("payload=" + url.QueryEscape(string(fixture(t, "github", "push_branch.json"))))
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-GitHub-Event", "push")
	ev, err := triggers.GitHub{}.Parse(r, body)
	if err != nil || ev.Push == nil || ev.Push.Metadata.Commit != "9a3c5f7e1b2d4c6a8e0f1a2b3c4d5e6f7a8b9c0d" {
		t.Fatalf("Parse(form) = %+v, %v", ev, err)
	}
}

func TestGitHubSignatureVariants(t *testing.T) {
	body := []byte(`{"zen":"x"}`)
	secret := []byte("k")
	for _, c := range []struct {
		header string
		want   error
	}{
		{triggers.SignSHA256(body, secret), nil},
		{strings.ToUpper(triggers.SignSHA256(body, secret)[:7]) + triggers.SignSHA256(body, secret)[7:], triggers.ErrBadSignature},
		{"sha1=" + strings.TrimPrefix(triggers.SignSHA256(body, secret), "sha256="), triggers.ErrBadSignature},
		{"sha256=zz", triggers.ErrBadSignature},
		{"sha256=", triggers.ErrBadSignature},
		{"", triggers.ErrUnsigned},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if c.header != "" {
			r.Header.Set("X-Hub-Signature-256", c.header)
		}
		err := triggers.GitHub{}.Verify(r, body, secret)
		if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("Verify(%q) = %v, want %v", c.header, err, c.want)
		}
	}
	// The legacy SHA-1 header alone is not accepted.
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("X-Hub-Signature", "sha1=0000")
	if err := (triggers.GitHub{}).Verify(r, body, secret); !errors.Is(err, triggers.ErrUnsigned) {
		t.Errorf("Verify(sha1 only) = %v, want ErrUnsigned", err)
	}
}

func TestGitLabTagWithoutCommitsHasNoCommitInfo(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("X-Gitlab-Event", "Tag Push Hook")
	ev, err := triggers.GitLab{}.Parse(r, fixture(t, "gitlab", "tag_push.json"))
	if err != nil || ev.Push == nil {
		t.Fatal(ev, err)
	}
	if ev.Push.Metadata.CommitInfo != nil || ev.Push.FilesKnown {
		t.Errorf("tag push: commit_info %+v, FilesKnown %v; want none", ev.Push.Metadata.CommitInfo, ev.Push.FilesKnown)
	}
}

func TestGitLabTruncatedCommitsLeaveFilesUnknown(t *testing.T) {
	body := strings.Replace(string(fixture(t, "gitlab", "push_branch.json")), `"total_commits_count": 2`, `"total_commits_count": 45`, 1)
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("X-Gitlab-Event", "Push Hook")
	ev, err := triggers.GitLab{}.Parse(r, []byte(body))
	if err != nil || ev.Push == nil {
		t.Fatal(ev, err)
	}
	if ev.Push.FilesKnown || ev.Push.Files != nil {
		t.Errorf("45 commits, 2 listed: FilesKnown %v Files %q; want unknown", ev.Push.FilesKnown, ev.Push.Files)
	}
}

func TestBitbucketUsesLastNonDeletedChangeAndHost(t *testing.T) {
	body := `{"repository":{"full_name":"w/r"},"actor":{"nickname":"n"},"push":{"changes":[
		{"new":{"type":"branch","name":"a","target":{"hash":"1111111","message":"m1"}},"old":null},
		{"new":null,"old":{"type":"branch","name":"gone","target":{"hash":"2222222"}}}]}}`
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("X-Event-Key", "repo:push")
	ev, err := triggers.Bitbucket{SSHHost: "git.local"}.Parse(r, []byte(body))
	if err != nil || ev.Push == nil {
		t.Fatal(ev, err)
	}
	md := ev.Push.Metadata
	if md.Ref != "refs/heads/a" || md.Commit != "1111111" || md.GitURL != "git@git.local:w/r.git" || ev.Push.Before != "" {
		t.Errorf("metadata = %+v before %q", md, ev.Push.Before)
	}
	if md.CommitInfo.Committer == nil || md.CommitInfo.Committer.Username != "n" {
		t.Errorf("committer = %+v, want the actor", md.CommitInfo.Committer)
	}
}

func TestCheckTokenAuth(t *testing.T) {
	secret := []byte("tok")
	for _, c := range []struct {
		user, pass string
		set        bool
		want       error
	}{
		{"$token", "tok", true, nil},
		{"$token", "nope", true, triggers.ErrBadSignature},
		{"admin", "tok", true, triggers.ErrBadSignature},
		{"", "", false, triggers.ErrUnsigned},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if c.set {
			r.SetBasicAuth(c.user, c.pass)
		}
		err := triggers.CheckTokenAuth(r, secret)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("CheckTokenAuth(%q:%q) = %v, want %v", c.user, c.pass, err, c.want)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.SetBasicAuth("$token", "")
	if err := triggers.CheckTokenAuth(r, nil); !errors.Is(err, triggers.ErrBadSignature) {
		t.Errorf("empty secret accepted: %v", err)
	}
}

func TestWebhookURLParsesBackToTokenAuth(t *testing.T) {
	u := triggers.WebhookURL("https", "berth.example.com", "5f0c4a1e-8d43-4c1b-9a57-0e2b7d9c3f10", "s3cr3t")
	if u != "https://$token:s3cr3t@berth.example.com/webhooks/push/trigger/5f0c4a1e-8d43-4c1b-9a57-0e2b7d9c3f10" {
		t.Fatalf("WebhookURL = %q", u)
	}
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, parsed.Path, nil)
	pass, _ := parsed.User.Password()
	r.SetBasicAuth(parsed.User.Username(), pass)
	if err := triggers.CheckTokenAuth(r, []byte("s3cr3t")); err != nil {
		t.Errorf("the URL's own credentials fail CheckTokenAuth: %v", err)
	}
}

func TestCredentials(t *testing.T) {
	got := triggers.Credentials("custom-git", "ssh-ed25519 AAAA k", "https://$token:x@h/webhooks/push/trigger/u")
	want := []triggers.Credential{
		{Name: "SSH Public Key", Value: "ssh-ed25519 AAAA k"},
		{Name: "Webhook Endpoint URL", Value: "https://$token:x@h/webhooks/push/trigger/u"},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Credentials = %+v", got)
	}
	if got := triggers.Credentials("svn", "k", "u"); got != nil {
		t.Errorf("unknown service: %+v", got)
	}
}

func TestReadPayload(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("0123456789"))
	if b, err := triggers.ReadPayload(r, 10); err != nil || string(b) != "0123456789" {
		t.Fatalf("ReadPayload at the limit = %q, %v", b, err)
	}
	r = httptest.NewRequest(http.MethodPost, "/", strings.NewReader("0123456789A"))
	r.ContentLength = -1 // chunked: only reading finds out
	if _, err := triggers.ReadPayload(r, 10); !errors.Is(err, triggers.ErrTooLarge) {
		t.Fatalf("ReadPayload over the limit = %v", err)
	}
	r = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(""))
	r.ContentLength = 1 << 30
	if _, err := triggers.ReadPayload(r, 0); !errors.Is(err, triggers.ErrTooLarge) {
		t.Fatalf("announced 1 GiB = %v", err)
	}
}
