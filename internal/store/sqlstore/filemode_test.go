package sqlstore

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

// The SQLite files hold password hashes and sealed secrets. Under a common
// umask (022) the review found berth.db, -wal and -shm created 0644 and
// readable by any local user, build workers included (F12). They must be
// 0600 when created, and a database left by an older version is tightened
// when opened.
func TestSQLiteFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "berth.db")
	files := []string{path, path + "-wal", path + "-shm"}

	useAndCheck := func(t *testing.T) {
		t.Helper()
		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// A write makes sure the WAL and its index exist.
		if err := s.CreateAccount(ctx, &store.Account{Kind: store.KindUser, Name: "u" + randomHex(4), Enabled: true}); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			info, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if perm := info.Mode().Perm(); perm != 0o600 {
				t.Errorf("%s has mode %o, want 600", filepath.Base(f), perm)
			}
		}
	}
	t.Run("created", useAndCheck)
	t.Run("left readable by an older version", func(t *testing.T) {
		for _, f := range files {
			if err := os.Chmod(f, 0o644); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		useAndCheck(t)
	})
}
