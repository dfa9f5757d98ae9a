package storage

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/plugin"
)

// Factory opens a driver from its parameters: the map that config.yaml's
// DISTRIBUTED_STORAGE_CONFIG gives the preferred location, which the driver
// reads itself. namespace is "" for the registry's blobs, or a name with
// the syntax of an upload ID (ValidateUploadID: no dot, no separator) whose blobs the driver keeps apart from those
// of every other namespace: Walk of one never lists another's, so that
// registry garbage collection cannot take build data for unreferenced
// blobs. The same parameters and namespace open the same blobs again.
type Factory func(ctx context.Context, params map[string]any, namespace string) (Driver, error)

var drivers = plugin.NewTable[Factory]("storage driver")

// Register makes a driver available under name, the name config.yaml uses
// (Quay's, such as "LocalStorage"). A driver's package calls it from an
// init function; it panics when f is nil or name is taken.
func Register(name string, f Factory) { drivers.Register(name, f) }

// Open opens namespace of the storage that the driver registered as name
// keeps with params.
func Open(ctx context.Context, name string, params map[string]any, namespace string) (Driver, error) {
	f, ok := drivers.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("storage driver %q is not supported (built in: %s)", name, strings.Join(drivers.Names(), ", "))
	}
	if namespace != "" && ValidateUploadID(namespace) != nil {
		return nil, fmt.Errorf("storage: namespace %q is not a plain name", namespace)
	}
	return f(ctx, params, namespace)
}
