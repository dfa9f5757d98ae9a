package gitserver

import (
	"crypto/subtle"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// ServeHTTP serves every repository under root with git's smart HTTP
// protocol (`git http-backend` as a CGI program) on a loopback port and
// returns the base URL ("http://127.0.0.1:port"). With a non-empty user,
// every request must carry basic auth user:pass (a forge's token); with an
// empty user the repositories are public.
func ServeHTTP(t testing.TB, root, user, pass string) string {
	t.Helper()
	testenv.RequireTools(t, "git")
	backend := &cgi.Handler{
		Path: filepath.Join(run(t, root, "git", "--exec-path"), "git-http-backend"),
		Root: "/",
		Env: append(gitSettings[:len(gitSettings):len(gitSettings)],
			"GIT_PROJECT_ROOT="+root,
			"GIT_HTTP_EXPORT_ALL=1",
		),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
