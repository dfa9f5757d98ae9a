package triggers_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
	"github.com/berth-dev/berth/triggers/providertest"
)

// Every registered service passes the registration checks, including one
// added without a provider suite of its own.
func TestEveryRegisteredForgeHasAClientAndAHost(t *testing.T) {
	services := triggers.Services()
	for _, want := range []string{triggers.ServiceBitbucket, triggers.ServiceCustomGit, triggers.ServiceGitHub, triggers.ServiceGitLab} {
		if !slices.Contains(services, want) {
			t.Errorf("service %q is not registered (have %v)", want, services)
		}
	}
	for _, s := range services {
		t.Run(s, func(t *testing.T) { providertest.CheckRegistration(t, s) })
	}
}

// namedProvider is a provider of any name, for registration tests.
type namedProvider struct {
	triggers.CustomGit
	name string
}

func (p namedProvider) Service() string { return p.name }

func TestRegisterRefusesNilIncompleteAndDuplicate(t *testing.T) {
	for name, r := range map[string]triggers.Registration{
		"nil provider": {},
		"duplicate":    {Provider: triggers.GitHub{}},
		"unnamed":      {Provider: namedProvider{name: ""}},
		"forge without a host": {Provider: namedProvider{name: "test-forge"}, API: &triggers.ForgeAPI{
			ConfigKey: "TEST_TRIGGER_CONFIG", ParseConfig: forge.DecodeConfig[forge.GitHubConfig]}},
	} {
		func() {
			defer func() {
				if p, _ := recover().(string); !strings.HasPrefix(p, "triggers.Register:") {
					t.Errorf("%s: Register panicked with %q, want its refusal", name, p)
				}
			}()
			triggers.Register(r)
		}()
	}
	if _, ok := triggers.Lookup("test-forge"); ok {
		t.Error("an incomplete forge was registered")
	}
}

func TestForgesWebHostsAndGitHosts(t *testing.T) {
	f, err := triggers.ForgesFromConfig(map[string]any{
		"GITHUB_TRIGGER_CONFIG": map[string]any{"GITHUB_ENDPOINT": "https://ghe.example.com:8443/"},
		"GITLAB_TRIGGER_CONFIG": map[string]any{"GITLAB_ENDPOINT": "http://gitlab.internal"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for service, want := range map[string]string{triggers.ServiceGitHub: "ghe.example.com:8443", triggers.ServiceGitLab: "gitlab.internal",
		triggers.ServiceBitbucket: "bitbucket.org", triggers.ServiceCustomGit: ""} {
		if got := f.WebHost(service); got != want {
			t.Errorf("WebHost(%s) = %q, want %q", service, got, want)
		}
	}
	want := []string{"bitbucket.org:443", "bitbucket.org:22", "ghe.example.com:8443", "ghe.example.com:22", "gitlab.internal:80", "gitlab.internal:22"}
	if got := f.GitHosts(); !slices.Equal(got, want) {
		t.Errorf("GitHosts = %v, want %v", got, want)
	}
}

func TestForgesFromConfig(t *testing.T) {
	f, err := triggers.ForgesFromConfig(map[string]any{
		"GITHUB_TRIGGER_CONFIG":    map[string]any{"API_ENDPOINT": "https://ghe.example.com/api/v3/", "ACCESS_TOKEN": "t"},
		"BITBUCKET_TRIGGER_CONFIG": map[string]any{"CONSUMER_KEY": "k"},
	})
	gh, _ := f.Configs[triggers.ServiceGitHub].(forge.GitHubConfig)
	bb, _ := f.Configs[triggers.ServiceBitbucket].(forge.BitbucketConfig)
	_, gitlab := f.Configs[triggers.ServiceGitLab]
	if err != nil || gh.APIEndpoint != "https://ghe.example.com/api/v3/" || gitlab || bb.ConsumerKey != "k" {
		t.Fatalf("ForgesFromConfig = %+v, %v", f, err)
	}
	if _, err := f.Client(triggers.ServiceGitLab, "x"); err == nil {
		t.Fatal("unconfigured GitLab gave a client")
	}
	if c, err := f.Client(triggers.ServiceCustomGit, ""); c != nil || err != nil {
		t.Fatalf("custom-git client = %v, %v", c, err)
	}
	if _, err := triggers.ForgesFromConfig(map[string]any{"GITLAB_TRIGGER_CONFIG": "not an object"}); err == nil {
		t.Fatal("bad GITLAB_TRIGGER_CONFIG accepted")
	}
}
