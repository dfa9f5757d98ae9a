package filesystem

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/storage"
	"github.com/berth-dev/berth/storage/storagetest"
)

// config.yaml's LocalStorage opens this driver through the registry, and a
// namespace is the directory of that name under storage_path.
func TestOpenByName(t *testing.T) {
	root := t.TempDir()
	params := map[string]any{"storage_path": root}
	for namespace, dir := range map[string]string{"": root, "builds": filepath.Join(root, "builds")} {
		d, err := storage.Open(context.Background(), DriverName, params, namespace)
		if err != nil {
			t.Fatalf("Open(%q): %v", namespace, err)
		}
		dgst := storagetest.Put(t, d, "by-name", storagetest.Data(3, 100))
		hex := dgst.Encoded()
		if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", hex[:2], hex)); err != nil {
			t.Errorf("namespace %q: blob not under %s: %v", namespace, dir, err)
		}
	}
}

func TestFromParametersNeedsStoragePath(t *testing.T) {
	for _, params := range []map[string]any{{}, {"storage_path": ""}, {"storage_path": 7}} {
		if _, err := FromParameters(params, ""); err == nil || !strings.Contains(err.Error(), "storage_path") {
			t.Errorf("FromParameters(%v) = %v, want an error naming storage_path", params, err)
		}
	}
}
