package filesystem

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/berth-dev/berth/storage"
)

// DriverName is the driver's name in config.yaml's
// DISTRIBUTED_STORAGE_CONFIG: Quay's, so that a Quay configuration keeps
// its meaning.
const DriverName = "LocalStorage"

func init() {
	storage.Register(DriverName, func(_ context.Context, params map[string]any, namespace string) (storage.Driver, error) {
		d, err := FromParameters(params, namespace)
		if err != nil {
			return nil, err
		}
		return d, nil
	})
}

// FromParameters opens the driver that config.yaml describes: its root is
// params' storage_path, and a namespace other than "" is a directory of
// that name under it (<storage_path>/builds for build data), which holds a
// tree of its own that the root's Walk never enters.
func FromParameters(params map[string]any, namespace string) (*Driver, error) {
	path, _ := params["storage_path"].(string)
	if path == "" {
		return nil, errors.New("LocalStorage needs storage_path")
	}
	path = filepath.Join(path, namespace)
	d, err := New(path)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", path, err)
	}
	return d, nil
}
