package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// tailLines is how much of the server log Main prints after a failed run.
const tailLines = 200

// Suite is what the tests of one end-to-end package share: a work dir for
// the run and the server that Main's setup starts in it.
type Suite struct {
	// Name is the package's name: it prefixes what the suite prints and
	// names its temp files.
	Name string
	// Bin is the program under test. Main sets it to BerthBinary() when
	// empty, and every test that calls Require skips when it is missing.
	Bin string
	// Work is the run's temp dir, removed when Main returns.
	Work string
	// Server is the shared server, stopped by Main after the tests.
	Server *Server

	skip     string
	err      error
	cleanups []func()
}

// Main runs the package's tests and returns TestMain's exit code. It makes
// the work dir and calls setup, which starts Server. A setup error fails
// every test that calls Require rather than the run as a whole, so the
// tests that need no server still run. After the tests Main stops the
// server, which must exit cleanly, and runs the cleanups. On any failure
// it prints the end of the server log and keeps the whole log in the temp
// dir, since the work dir is about to go.
func (s *Suite) Main(m *testing.M, setup func(ctx context.Context) error) int {
	if s.Bin == "" {
		bin, err := BerthBinary()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", s.Name, err)
			return 1
		}
		s.Bin = bin
	}
	if _, err := os.Stat(s.Bin); err != nil {
		s.skip = fmt.Sprintf("%s not found (run `make build`): SKIPPING every %s end-to-end test", s.Bin, s.Name)
		fmt.Fprintf(os.Stderr, "%s: %s\n", s.Name, s.skip)
		return m.Run()
	}
	work, err := os.MkdirTemp("", "berth-"+s.Name+"-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", s.Name, err)
		return 1
	}
	s.Work = work
	defer RemoveAll(work)

	if s.err = setup(context.Background()); s.err != nil {
		fmt.Fprintf(os.Stderr, "%s: setup failed: %v\n", s.Name, s.err)
	}
	code := m.Run()
	if s.Server != nil {
		if err := s.Server.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: stopping the server: %v\n", s.Name, err)
			if code == 0 {
				code = 1
			}
		}
		if code != 0 {
			s.keepLog()
		}
	}
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	return code
}

// keepLog prints the end of the server log and copies all of it out of
// the work dir: the server's own account of what went wrong is the first
// thing anyone debugging a red run needs.
func (s *Suite) keepLog() {
	fmt.Fprintln(os.Stderr, s.Server.Tail(tailLines))
	data, err := os.ReadFile(s.Server.LogPath)
	if err != nil {
		return
	}
	keep := filepath.Join(os.TempDir(), "berth-"+s.Name+"-server-"+time.Now().Format("20060102-150405")+".log")
	if os.WriteFile(keep, data, 0o600) == nil {
		fmt.Fprintf(os.Stderr, "%s: full server log kept at %s\n", s.Name, keep)
	}
}

// Cleanup registers f to run after the tests, once the server has stopped
// and before the work dir goes; the last registered runs first.
func (s *Suite) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }

// Require skips t when the program under test is missing and fails it when
// the setup failed.
func (s *Suite) Require(t testing.TB) {
	t.Helper()
	if s.skip != "" {
		t.Skip(s.skip)
	}
	if s.err != nil {
		t.Fatalf("shared setup failed: %v", s.err)
	}
}

// StartServer starts the shared server from o, with Bin and Dir (Work/server)
// filled in when empty.
func (s *Suite) StartServer(ctx context.Context, o ServerOptions) error {
	if o.Bin == "" {
		o.Bin = s.Bin
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(s.Work, "server")
	}
	srv, err := StartServer(ctx, o)
	if err != nil {
		return err
	}
	s.Server = srv
	fmt.Fprintf(os.Stderr, "%s: %s listening on %s (log %s)\n", s.Name, srv.name(), srv.Addr, srv.LogPath)
	return nil
}

// NewTools makes the run's isolated tool environment in Work/tools.
func (s *Suite) NewTools() (*Tools, error) { return NewTools(filepath.Join(s.Work, "tools")) }

// PushBase pushes a Busybox image to the shared server as the superuser's
// base:latest and returns its reference.
func (s *Suite) PushBase(ctx context.Context, tools *Tools) (string, error) {
	ref := s.Server.Ref(s.Server.Opts.User + "/base:latest")
	start := time.Now()
	if err := tools.PushBusybox(ctx, ref, s.Server.Creds()); err != nil {
		return "", fmt.Errorf("pushing the busybox base image: %w", err)
	}
	fmt.Fprintf(os.Stderr, "%s: base image %s pushed in %s\n", s.Name, ref, time.Since(start).Round(time.Millisecond))
	return ref, nil
}
