package manage

import (
	"testing"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
)

// A forge's SSH URL names its web host without the web port.
func TestTriggerGitURLOfSelfHostedForge(t *testing.T) {
	s := &Service{o: Options{Forges: triggers.Forges{Configs: map[string]forge.Config{
		triggers.ServiceGitHub: forge.GitHubConfig{GitHubEndpoint: "https://ghe.example.com:8443/"}}}}}
	tr := &store.Trigger{Service: triggers.ServiceGitHub, Config: []byte(`{"build_source": "octo/app"}`)}
	got := s.GitURL(tr, triggers.Config{BuildSource: "octo/app"})
	if want := "git@ghe.example.com:octo/app.git"; got != want {
		t.Errorf("GitURL = %q, want %q", got, want)
	}
	if got := s.RepositoryURL(tr); got != "https://ghe.example.com:8443/octo/app" {
		t.Errorf("repository_url = %q keeps no web port", got)
	}
}
