package registry_test

import (
	"github.com/berth-dev/berth/internal/store/sqlstore"
	"github.com/berth-dev/berth/registry"
)

// The SQL store is the registry's store.
var _ registry.Store = (*sqlstore.Store)(nil)
