package main

// The plug-ins this binary carries. Each registers itself by name from its
// package's init (storage.Register, executors.Register, engine.Register),
// and config.yaml chooses among them by that name; adding one is adding
// its import here.
import (
	_ "github.com/berth-dev/berth/executors/kubernetes"
	_ "github.com/berth-dev/berth/executors/local"
	_ "github.com/berth-dev/berth/storage/filesystem"
	_ "github.com/berth-dev/berth/worker/engine/buildah"
	_ "github.com/berth-dev/berth/worker/engine/buildkit"
)
