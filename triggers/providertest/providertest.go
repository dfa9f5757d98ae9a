// Package providertest is the table-driven suite every triggers.Provider
// passes: signature checks, delivery ids, payload limits, malformed bodies,
// and the provider's own fixtures parsed into the expected events.
package providertest

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
)

// Want is what parsing a fixture must yield: a skip with Skip as its reason,
// or (Skip empty) a push with these fields.
type Want struct {
	Skip           triggers.SkipReason
	Commit         string
	Ref            string
	DefaultBranch  string
	GitURL         string
	Repository     string
	Message        string
	AuthorUsername string
	Files          []string
	FilesKnown     bool
}

// Fixture is one delivery: the forge's event headers and a body.
type Fixture struct {
	Name    string
	Headers map[string]string
	Body    []byte
	Want    Want
}

// Suite describes a provider under test.
type Suite struct {
	Provider triggers.Provider
	Service  string
	// Sign sets on h a valid signature or token of body for secret.
	Sign func(h http.Header, body, secret []byte)
	// SignatureRequired: an unsigned delivery is ErrUnsigned (otherwise it
	// passes Verify).
	SignatureRequired bool
	// TokenAuth: the provider checks a shared token that does not cover the
	// body (GitLab), so a tampered body still verifies.
	TokenAuth bool
	// DeliveryHeader names the header DeliveryID reads.
	DeliveryHeader string
	// PushHeaders are the event headers of a push, under which a body that
	// is not the expected JSON must be ErrMalformed.
	PushHeaders map[string]string
	Fixtures    []Fixture
}

func request(headers map[string]string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/push/trigger/0b5e1c9a-2f1d-4d7a-8f43-1d0e6c2b7a55", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	return r
}

// Run runs the suite.
func Run(t *testing.T, s Suite) {
	t.Helper()
	if len(s.Fixtures) == 0 {
		t.Fatal("suite has no fixtures")
	}
	secret := []byte("s3cr3t-trigger-token")

	t.Run("Service", func(t *testing.T) {
		if got := s.Provider.Service(); got != s.Service {
			t.Fatalf("Service() = %q, want %q", got, s.Service)
		}
		p, err := triggers.ForService(s.Service)
		if err != nil || p.Service() != s.Service {
			t.Fatalf("ForService(%q) = %v, %v", s.Service, p, err)
		}
	})

	t.Run("EventName", func(t *testing.T) {
		if got := s.Provider.EventName(request(s.PushHeaders, nil)); got == "" {
			t.Errorf("EventName of a push with headers %v is empty", s.PushHeaders)
		}
	})

	t.Run("Registration", func(t *testing.T) { CheckRegistration(t, s.Service) })

	t.Run("Verify", func(t *testing.T) {
		for _, fx := range s.Fixtures {
			body := fx.Body
			r := request(fx.Headers, body)
			s.Sign(r.Header, body, secret)
			if err := s.Provider.Verify(r, body, secret); err != nil {
				t.Errorf("%s: signed delivery: Verify = %v, want nil", fx.Name, err)
			}
			tampered := append(bytes.Clone(body), ' ')
			err := s.Provider.Verify(r, tampered, secret)
			if !s.TokenAuth && !errors.Is(err, triggers.ErrBadSignature) {
				t.Errorf("%s: tampered body: Verify = %v, want ErrBadSignature", fx.Name, err)
			}
			if err := s.Provider.Verify(r, body, []byte("another-secret")); !errors.Is(err, triggers.ErrBadSignature) {
				t.Errorf("%s: wrong secret: Verify = %v, want ErrBadSignature", fx.Name, err)
			}
			if err := s.Provider.Verify(r, body, nil); !errors.Is(err, triggers.ErrBadSignature) {
				t.Errorf("%s: trigger without secret: Verify = %v, want ErrBadSignature", fx.Name, err)
			}
			unsigned := request(fx.Headers, body)
			err = s.Provider.Verify(unsigned, body, secret)
			if s.SignatureRequired && !errors.Is(err, triggers.ErrUnsigned) {
				t.Errorf("%s: unsigned: Verify = %v, want ErrUnsigned", fx.Name, err)
			}
			if !s.SignatureRequired && err != nil {
				t.Errorf("%s: unsigned: Verify = %v, want nil (signature optional)", fx.Name, err)
			}
			if got := triggers.StatusCode(triggers.ErrBadSignature); got != http.StatusUnauthorized {
				t.Fatalf("StatusCode(ErrBadSignature) = %d", got)
			}
		}
	})

	t.Run("DeliveryID", func(t *testing.T) {
		r := request(s.Fixtures[0].Headers, s.Fixtures[0].Body)
		if got := s.Provider.DeliveryID(r); got != "" {
			t.Errorf("DeliveryID without header = %q, want empty", got)
		}
		r.Header.Set(s.DeliveryHeader, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
		if got := s.Provider.DeliveryID(r); got != "72d3162e-cc78-11e3-81ab-4c9367dc0958" {
			t.Errorf("DeliveryID = %q, want the %s header", got, s.DeliveryHeader)
		}
	})

	t.Run("Malformed", func(t *testing.T) {
		for _, body := range []string{`{"ref": `, `not json`, `[1, 2, 3]`, `{"ref": 42, "commit": []}`} {
			_, err := s.Provider.Parse(request(s.PushHeaders, []byte(body)), []byte(body))
			if !errors.Is(err, triggers.ErrMalformed) {
				t.Errorf("Parse(%q) = %v, want ErrMalformed", body, err)
			}
			if triggers.StatusCode(err) != http.StatusBadRequest {
				t.Errorf("StatusCode(Parse(%q)) = %d, want 400", body, triggers.StatusCode(err))
			}
		}
	})

	t.Run("TooLarge", func(t *testing.T) {
		body := bytes.Repeat([]byte(" "), triggers.MaxPayloadBytes+1)
		_, err := s.Provider.Parse(request(s.PushHeaders, nil), body)
		if !errors.Is(err, triggers.ErrTooLarge) || triggers.StatusCode(err) != http.StatusRequestEntityTooLarge {
			t.Errorf("Parse(oversized) = %v, want ErrTooLarge (413)", err)
		}
	})

	for _, fx := range s.Fixtures {
		t.Run("Parse/"+fx.Name, func(t *testing.T) {
			ev, err := s.Provider.Parse(request(fx.Headers, fx.Body), fx.Body)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkEvent(t, s.Service, ev, fx.Want)
		})
	}
}

func checkEvent(t *testing.T, service string, ev triggers.Event, w Want) {
	t.Helper()
	if w.Skip != "" {
		if ev.Push != nil || ev.Skip.Reason != w.Skip {
			t.Fatalf("event = push %v skip %+v, want skip %q", ev.Push != nil, ev.Skip, w.Skip)
		}
		if ev.Skip.Message == "" {
			t.Errorf("skip %q has no message", w.Skip)
		}
		return
	}
	if ev.Skip.Skipped() || ev.Push == nil {
		t.Fatalf("event skipped (%+v), want a push", ev.Skip)
	}
	p := ev.Push
	md := p.Metadata
	for _, c := range []struct{ field, got, want string }{
		{"service", p.Service, service},
		{"commit", md.Commit, w.Commit},
		{"ref", md.Ref, w.Ref},
		{"default_branch", md.DefaultBranch, w.DefaultBranch},
		{"git_url", md.GitURL, w.GitURL},
		{"repository", p.Repository, w.Repository},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if w.Message != "" || w.AuthorUsername != "" {
		if md.CommitInfo == nil {
			t.Fatalf("commit_info missing, want message %q author %q", w.Message, w.AuthorUsername)
		}
		if md.CommitInfo.Message != w.Message {
			t.Errorf("commit_info.message = %q, want %q", md.CommitInfo.Message, w.Message)
		}
		author := ""
		if md.CommitInfo.Author != nil {
			author = md.CommitInfo.Author.Username
		}
		if author != w.AuthorUsername {
			t.Errorf("commit_info.author.username = %q, want %q", author, w.AuthorUsername)
		}
	}
	if p.FilesKnown != w.FilesKnown {
		t.Errorf("FilesKnown = %v, want %v", p.FilesKnown, w.FilesKnown)
	}
	if !slices.Equal(p.Files, w.Files) {
		t.Errorf("Files = %q, want %q", p.Files, w.Files)
	}
}

// CheckRegistration checks what the rest of berth looks up by service: a
// registered forge has a config key, a web host, and a config from which a
// client is made (with a token, since the config here has none of its own).
func CheckRegistration(t *testing.T, service string) {
	t.Helper()
	r, ok := triggers.Lookup(service)
	if !ok {
		t.Fatalf("service %q is not registered", service)
	}
	if r.API == nil {
		return
	}
	if r.API.ConfigKey == "" || r.API.DefaultWebHost == "" {
		t.Errorf("forge %s: config key %q, default web host %q", service, r.API.ConfigKey, r.API.DefaultWebHost)
	}
	if host := (triggers.Forges{}).WebHost(service); host != r.API.DefaultWebHost {
		t.Errorf("forge %s unconfigured: web host %q, want %q", service, host, r.API.DefaultWebHost)
	}
	cfg, err := r.API.ParseConfig([]byte(`{}`))
	if err != nil {
		t.Fatalf("forge %s: ParseConfig({}) = %v", service, err)
	}
	f := triggers.Forges{Configs: map[string]forge.Config{service: cfg}}
	if c, err := f.Client(service, "a-token"); c == nil || err != nil {
		t.Errorf("forge %s: Client = %v, %v; want a client", service, c, err)
	}
	if _, err := (triggers.Forges{}).Client(service, "a-token"); !errors.Is(err, triggers.ErrForgeNotConfigured) {
		t.Errorf("forge %s unconfigured: Client error %v, want ErrForgeNotConfigured", service, err)
	}
}
