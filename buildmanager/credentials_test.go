package buildmanager

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/registry"
	regauth "github.com/berth-dev/berth/registry/auth"
	"github.com/berth-dev/berth/storage/filesystem"
)

// tenants creates alice and bob with repositories app (private), private
// and public, and the organization acme with a robot acme+puller that may
// read acme/base only. It returns the repositories by full name.
func tenants(t *testing.T, st store.Store) map[string]*store.Repository {
	t.Helper()
	ctx := context.Background()
	repos := map[string]*store.Repository{}
	mkRepo := func(ns *store.Account, name string, vis store.Visibility) *store.Repository {
		repo := &store.Repository{NamespaceID: ns.ID, Name: name, Visibility: vis}
		if err := st.CreateRepository(ctx, repo); err != nil {
			t.Fatal(err)
		}
		repos[ns.Name+"/"+name] = repo
		return repo
	}
	for _, name := range []string{"alice", "bob"} {
		a, err := st.GetAccountByName(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			a = &store.Account{Kind: store.KindUser, Name: name, Enabled: true}
			err = st.CreateAccount(ctx, a)
		}
		if err != nil {
			t.Fatal(err)
		}
		if name == "alice" {
			app, err := st.GetRepository(ctx, "alice", "app")
			if errors.Is(err, store.ErrNotFound) {
				app = mkRepo(a, "app", store.Private)
			} else if err != nil {
				t.Fatal(err)
			}
			repos["alice/app"] = app
		} else {
			mkRepo(a, "app", store.Private)
		}
		mkRepo(a, "private", store.Private)
		mkRepo(a, "public", store.Public)
	}
	acme := &store.Account{Kind: store.KindOrganization, Name: "acme", Enabled: true}
	if err := st.CreateAccount(ctx, acme); err != nil {
		t.Fatal(err)
	}
	base := mkRepo(acme, "base", store.Private)
	mkRepo(acme, "secret", store.Private)
	robot := &store.Account{Kind: store.KindRobot, Name: "acme+puller", OwnerID: acme.ID, Enabled: true}
	if err := st.CreateAccount(ctx, robot); err != nil {
		t.Fatal(err)
	}
	if err := st.SetRepoPermission(ctx, &store.RepoPermission{RepoID: base.ID, AccountID: robot.ID, Role: store.RoleRead}); err != nil {
		t.Fatal(err)
	}
	return repos
}

// registryTokens is the registry's token service over the database, as
// serve builds it.
func registryTokens(t *testing.T, st store.Store) *auth.TokenService {
	t.Helper()
	ts := auth.NewTokenService(testKey, 0)
	ts.Revoker.Store = st
	if err := ts.Revoker.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestBuildCredentials(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		repos := tenants(t, e.st)
		tokens := registryTokens(t, e.st)
		// alice's credentials were revoked once (a password change): her
		// build tokens carry her current epoch and still work.
		if err := tokens.Revoker.Revoke(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		bc := &BuildCredentials{Tokens: tokens, Policy: &auth.Policy{Store: e.st}, Service: "berth.test", Registry: "berth.test:8080"}
		app := repos["alice/app"]
		b := &store.Build{ID: "b1", RepoID: app.ID, Namespace: "alice", Repository: "app", Requester: "alice", Attempts: 1}
		bases := []string{"alice/private", "bob/public", "bob/private", "acme/base", "nobody/there", "not-a-name", "alice/app", "bob/public"}
		creds, err := bc.Issue(ctx, b, bases)
		if err != nil {
			t.Fatal(err)
		}
		if creds.GetUsername() != RegistryTokenUser || creds.GetRegistry() != "berth.test:8080" ||
			creds.GetExpiresInSeconds() != int64(DefaultRegistryTokenLifetime/time.Second) {
			t.Errorf("credentials %v", creds)
		}
		claims, err := tokens.Verify(ctx, creds.GetPassword())
		if err != nil {
			t.Fatalf("token does not verify: %v", err)
		}
		if claims.Subject != "alice" || !claims.Scoped || claims.Grant != auth.BuildGrant("b1", 1) {
			t.Errorf("subject %q scoped %v grant %q", claims.Subject, claims.Scoped, claims.Grant)
		}
		if left := time.Until(claims.ExpiresAt.Time); left > DefaultRegistryTokenLifetime || left < DefaultRegistryTokenLifetime-time.Minute {
			t.Errorf("token expires in %v", left)
		}
		want := []auth.ResourceActions{
			{Type: auth.TypeRepository, Name: "alice/app", Actions: []auth.Action{auth.Pull, auth.Push}},
			{Type: auth.TypeRepository, Name: "alice/private", Actions: []auth.Action{auth.Pull}},
			{Type: auth.TypeRepository, Name: "bob/public", Actions: []auth.Action{auth.Pull}},
		}
		if got := claims.Access; len(got) != len(want) {
			t.Errorf("access %v, want %v", got, want)
		} else {
			for i := range want {
				if got[i].Name != want[i].Name || !claims.Allows(auth.TypeRepository, want[i].Name, want[i].Actions...) {
					t.Errorf("access %v, want %v", got, want)
				}
			}
		}
		// alice may read alice/public, but the Dockerfile did not ask.
		if claims.Allows(auth.TypeRepository, "alice/public", auth.Pull) {
			t.Error("the token grants a repository the build did not name")
		}

		// With a pull robot, only the robot's rights decide the bases.
		b.Request.PullRobot = "acme+puller"
		creds, err = bc.Issue(ctx, b, []string{"acme/base", "acme/secret", "alice/private", "bob/public"})
		if err != nil {
			t.Fatal(err)
		}
		claims, err = tokens.Verify(ctx, creds.GetPassword())
		if err != nil {
			t.Fatal(err)
		}
		for repo, want := range map[string]bool{"acme/base": true, "acme/secret": false, "alice/private": false, "bob/public": true} {
			if got := claims.Allows(auth.TypeRepository, repo, auth.Pull); got != want {
				t.Errorf("pull robot build: pull %s = %v, want %v", repo, got, want)
			}
		}
		if !claims.Allows(auth.TypeRepository, "alice/app", auth.Pull, auth.Push) {
			t.Error("pull robot build cannot push its own repository")
		}

		many := make([]string, MaxBaseRepositories+1)
		for i := range many {
			many[i] = "bob/public"
		}
		if _, err := bc.Issue(ctx, b, many); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%d bases: %v", len(many), err)
		}

		// Revoking attempt 1 ends its tokens here at once, and on another
		// server of the database with its next sync; attempt 2's tokens
		// are not touched.
		other := registryTokens(t, e.st)
		if _, err := other.Verify(ctx, creds.GetPassword()); err != nil {
			t.Fatalf("second server, before the revocation: %v", err)
		}
		b.Attempts = 2
		second, err := bc.Issue(ctx, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := bc.Revoke(ctx, "b1", 1); err != nil {
			t.Fatal(err)
		}
		if _, err := tokens.Verify(ctx, creds.GetPassword()); !errors.Is(err, auth.ErrTokenRevoked) {
			t.Errorf("after the revocation: %v, want revoked", err)
		}
		if err := other.Revoker.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Verify(ctx, creds.GetPassword()); !errors.Is(err, auth.ErrTokenRevoked) {
			t.Errorf("second server after its sync: %v, want revoked", err)
		}
		if _, err := other.Verify(ctx, second.GetPassword()); err != nil {
			t.Errorf("the next attempt's token: %v", err)
		}
	})
}

// workerClient dials the manager's worker service.
func workerClient(t *testing.T, addr string) workerpb.BuildManagerClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workerpb.NewBuildManagerClient(conn)
}

// TestCredentialsEndWithTheBuild: a worker's registry token works on /v2
// while its build runs and answers 401 once the build ended, whichever
// way it ended, and no new one is issued for an ended attempt.
func TestCredentialsEndWithTheBuild(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		tokens := registryTokens(t, e.st)
		policy := &auth.Policy{Store: e.st}
		blobs, err := filesystem.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		authz := regauth.NewServer(regauth.ServerOptions{Policy: policy, Authenticator: auth.NewAuthenticator(e.st), Tokens: tokens})
		v2 := httptest.NewServer(registry.New(registry.Options{Store: e.st, Blobs: blobs, Authorizer: authz, Policy: policy}))
		t.Cleanup(v2.Close)
		base := func(password string) int {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, v2.URL+"/v2/", nil)
			req.SetBasicAuth(RegistryTokenUser, password)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}

		h := start(t, e, always(behaveHang), func(o *Options) {
			o.TimeLimit = 3 * time.Second
			o.Credentials = &BuildCredentials{Tokens: tokens, Policy: policy, Service: "berth.test", Registry: "berth.test:8080"}
		})
		var client workerpb.BuildManagerClient
		// credentials asks for credentials as the worker of b's current
		// attempt would, with the job token it was given.
		credentials := func(b *store.Build) (string, string, error) {
			t.Helper()
			h.waitPhase(t, b.ID, store.PhaseBuildScheduled, 5*time.Second)
			if client == nil {
				// The manager listens once it runs a build.
				client = workerClient(t, h.WorkerAddr())
			}
			cur, err := h.Get(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			jobToken, err := h.tokens.issue(typJob, b.ID, cur.Attempts, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			creds, err := client.IssueRegistryCredentials(ctx, &workerpb.RegistryCredentialsRequest{JobToken: jobToken})
			if err != nil {
				return jobToken, "", err
			}
			return jobToken, creds.GetPassword(), nil
		}
		mustCredentials := func(b *store.Build) (string, string) {
			t.Helper()
			job, pw, err := credentials(b)
			if err != nil {
				t.Fatal(err)
			}
			if code := base(pw); code != http.StatusOK {
				t.Fatalf("GET /v2/ with a running build's token: %d", code)
			}
			return job, pw
		}
		ended := func(what, pw string) {
			t.Helper()
			deadline := time.Now().Add(2 * time.Second)
			for code := base(pw); code != http.StatusUnauthorized; code = base(pw) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: GET /v2/ with the build's token answers %d, want 401", what, code)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}

		// Cancelled.
		b := h.submit(t)
		job, pw := mustCredentials(b)
		if _, err := h.Cancel(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		ended("cancelled", pw)
		_, err = client.IssueRegistryCredentials(ctx, &workerpb.RegistryCredentialsRequest{JobToken: job})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("credentials for a cancelled build: %v, want FAILED_PRECONDITION", err)
		}

		// Completed: the worker finishes with its digests.
		b = h.submit(t)
		job, pw = mustCredentials(b)
		if _, err := client.Finish(ctx, &workerpb.FinishRequest{JobToken: job, Result: &workerpb.FinishRequest_Success{
			Success: &workerpb.Success{Digests: map[string]string{"latest": "sha256:1", "v1": "sha256:1"}}}}); err != nil {
			t.Fatal(err)
		}
		if got := h.waitEnd(t, b.ID, 5*time.Second); got.Phase != store.PhaseComplete {
			t.Fatalf("build %s", got.Phase)
		}
		ended("complete", pw)

		// A retryable failure ends the attempt's token; the next attempt
		// gets a working one. The time limit then ends the build.
		b = h.submit(t)
		job, first := mustCredentials(b)
		if _, err := client.Finish(ctx, &workerpb.FinishRequest{JobToken: job, Result: &workerpb.FinishRequest_Error{
			Error: &workerpb.BuildError{Code: "push", Message: "registry unreachable", Retryable: true}}}); err != nil {
			t.Fatal(err)
		}
		ended("failed attempt", first)
		deadline := time.Now().Add(5 * time.Second)
		for {
			cur, err := h.Get(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if cur.Attempts == 2 && cur.Phase == store.PhaseBuildScheduled {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no second attempt: %s, attempt %d", cur.Phase, cur.Attempts)
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, pw = mustCredentials(b)
		if got := h.waitEnd(t, b.ID, 10*time.Second); got.Phase != store.PhaseError {
			t.Fatalf("build past its time limit: %s", got.Phase)
		}
		ended("time limit", pw)
	})
}
