package gitsource

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/egress"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/test/gitserver"
)

// loopbackPolicy lets the tests reach their loopback git servers, as
// OUTBOUND_ALLOWED_NETWORKS: ["127.0.0.0/8"] does.
var loopbackPolicy = mustPolicy(egress.Options{AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})

func mustPolicy(o egress.Options) *egress.Policy {
	p, err := egress.New(o)
	if err != nil {
		panic(err)
	}
	return p
}

func TestDefaultPolicyRefusesLoopbackServers(t *testing.T) {
	addr, accepted := testenv.CountingListener(t)
	_, port, _ := net.SplitHostPort(addr)
	r := gitserver.NewRepo(t)
	r.Commit("first", map[string]string{"Dockerfile": "FROM x\n"})
	r.Push("main")
	daemon := gitserver.ServeGitDaemon(t, r.Root) + "/" + r.Name
	for _, url := range []string{
		daemon,
		"git://" + addr + "/x.git",
		"http://" + addr + "/x.git",
		"https://localhost:" + port + "/x.git",
		"ssh://git@[::ffff:127.0.0.1]:" + port + "/x.git",
		"git@127.0.0.1:x.git",
		"git://0.0.0.0:" + port + "/x.git",
	} {
		src := Source{URL: url, Ref: "refs/heads/main", KnownHosts: "[127.0.0.1]:" + port + " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
			PrivateKey: sshTestKey(t)}
		_, err := ResolveRef(ctxT(t), nil, src, "")
		assertUserError(t, err, ErrRefusedHost)
		_, err = ReadFile(ctxT(t), nil, src, "Dockerfile", 1<<20)
		assertUserError(t, err, ErrRefusedHost)
		res := fetchWith(t, nil, src)
		assertUserError(t, res.err, ErrRefusedHost)
		if err := CheckURL(ctxT(t), nil, url); err == nil {
			t.Errorf("CheckURL(%s) passed", url)
		} else {
			assertUserError(t, err, ErrRefusedHost)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("a refused server was connected to %d times", n)
	}
	if err := CheckURL(ctxT(t), loopbackPolicy, daemon); err != nil {
		t.Fatalf("CheckURL with loopback allowed: %v", err)
	}
	for _, url := range []string{"file:///etc", "/srv/git/app.git", "ftp://git.example.com/app.git"} {
		if err := CheckURL(ctxT(t), loopbackPolicy, url); err == nil {
			t.Errorf("CheckURL(%s) passed", url)
		}
	}
}

// sshTestKey is a deploy key for sources that never get to use it.
func sshTestKey(t *testing.T) string {
	key, _ := gitserver.NewSSHKey(t)
	return key
}

func fetchWith(t *testing.T, p *egress.Policy, src Source) result {
	t.Helper()
	res := result{dir: t.TempDir() + "/src"}
	res.err = Fetch(ctxT(t), p, res.dir, src, func(line string) { res.logs = append(res.logs, line) })
	return res
}

func TestRefusedServersLookAlikeOpenOrClosed(t *testing.T) {
	open, _ := testenv.CountingListener(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, scheme := range []string{"git://", "http://", "ssh://git@"} {
		msg := func(addr string) string {
			_, port, _ := net.SplitHostPort(addr)
			_, err := ResolveRef(ctxT(t), nil, Source{URL: scheme + addr + "/x.git", PrivateKey: sshTestKey(t), KnownHosts: "[127.0.0.1]:" + port + " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}, "")
			ue := assertUserError(t, err, ErrRefusedHost)
			return strings.ReplaceAll(ue.Message, port, "PORT")
		}
		if o, c := msg(open), msg(closed); o != c {
			t.Errorf("%s: open and closed ports differ:\n%s\n%s", scheme, o, c)
		}
	}
}

// A name is resolved once, checked, and go-git dials that address: the
// fake resolver's name means nothing to the system resolver.
func TestNamesArePinnedToTheCheckedAddress(t *testing.T) {
	r := gitserver.NewRepo(t)
	r.Commit("first", map[string]string{"Dockerfile": "FROM pinned\n"})
	r.Push("main")
	daemon := gitserver.ServeGitDaemon(t, r.Root)
	port := daemon[strings.LastIndex(daemon, ":")+1:]
	res := &answers{by: map[string][]netip.Addr{"git.test": {netip.MustParseAddr("127.0.0.1")}}}
	p := mustPolicy(egress.Options{AllowedNetworks: loopbackPolicy.AllowedNetworks(), Resolver: res})
	got, err := ReadFile(ctxT(t), p, Source{URL: "git://git.test:" + port + "/" + r.Name}, "Dockerfile", 1<<20)
	if err != nil || string(got) != "FROM pinned\n" {
		t.Fatalf("ReadFile through a pinned name = %q, %v", got, err)
	}
	// The same name answering another address later is refused there.
	res.by["git.test"] = []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	_, err = ReadFile(ctxT(t), p, Source{URL: "git://git.test:" + port + "/" + r.Name}, "Dockerfile", 1<<20)
	assertUserError(t, err, ErrRefusedHost)
}

func TestSSHHostKeyIsCheckedForTheNameNotTheAddress(t *testing.T) {
	r := gitserver.NewRepo(t)
	r.Commit("first", map[string]string{"Dockerfile": "FROM ssh\n"})
	r.Push("main")
	key, authorized := gitserver.NewSSHKey(t)
	base, known := gitserver.ServeSSH(t, r.Root, authorized)
	// base is ssh://root@127.0.0.1:port/<root>; the server is named
	// git.test instead, and known_hosts records that name.
	named := strings.Replace(base, "@127.0.0.1:", "@git.test:", 1)
	knownNamed := strings.Replace(known, "[127.0.0.1]", "[git.test]", 1)
	p := mustPolicy(egress.Options{AllowedNetworks: loopbackPolicy.AllowedNetworks(),
		Resolver: &answers{by: map[string][]netip.Addr{"git.test": {netip.MustParseAddr("127.0.0.1")}}}})
	got, err := ReadFile(ctxT(t), p, Source{URL: named + "/" + r.Name, PrivateKey: key, KnownHosts: knownNamed}, "Dockerfile", 1<<20)
	if err != nil || string(got) != "FROM ssh\n" {
		t.Fatalf("ReadFile over SSH by name = %q, %v", got, err)
	}
	// known_hosts for the address alone does not vouch for the name.
	_, err = ReadFile(ctxT(t), p, Source{URL: named + "/" + r.Name, PrivateKey: key, KnownHosts: known}, "Dockerfile", 1<<20)
	if err == nil {
		t.Fatal("known_hosts of 127.0.0.1 was accepted for git.test")
	}
}

// answers is a resolver with fixed answers.
type answers struct{ by map[string][]netip.Addr }

func (a *answers) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if as, ok := a.by[host]; ok {
		return as, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
