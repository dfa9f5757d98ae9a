package main

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/storage/storagetest"
)

// Build data goes to a namespace the registry's storage never lists, so that
// a registry garbage collector walking its blobs cannot delete a log archive.
func TestBuildDataIsApartFromRegistryBlobs(t *testing.T) {
	cfg := &config.Config{DataDir: t.TempDir()}
	registryBlobs, err := openStorage(context.Background(), cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	buildBlobs, err := openStorage(context.Background(), cfg, buildDataNamespace)
	if err != nil {
		t.Fatal(err)
	}
	archive := storagetest.Data(7, 4096)
	dgst := storagetest.Put(t, buildBlobs, "buildlog-1", archive)

	if err := registryBlobs.Walk(context.Background(), func(d digest.Digest, _ int64) error {
		t.Errorf("the registry's storage lists build data %s", d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reopened, err := openStorage(context.Background(), cfg, buildDataNamespace)
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckBlob(t, reopened, dgst, archive)
}
