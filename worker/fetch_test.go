package worker

import (
	"testing"

	pb "github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/gitsource"
)

func TestGitSourceCarriesEveryField(t *testing.T) {
	in := &pb.GitSource{Url: "ssh://git.test/x.git", CommitSha: "0123", Ref: "refs/heads/main", PrivateKey: "key",
		KnownHosts: "git.test ssh-ed25519 AAAA", Username: "u", Password: "p"}
	want := gitsource.Source{URL: "ssh://git.test/x.git", CommitSHA: "0123", Ref: "refs/heads/main", PrivateKey: "key",
		KnownHosts: "git.test ssh-ed25519 AAAA", Username: "u", Password: "p"}
	if got := gitSource(in); got != want {
		t.Errorf("gitSource = %+v, want %+v", got, want)
	}
}
