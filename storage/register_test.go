package storage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/berth-dev/berth/storage"
	_ "github.com/berth-dev/berth/storage/filesystem"
)

// opened records what the test driver's factory was given.
type opened struct {
	params    map[string]any
	namespace string
}

func TestOpenCallsTheRegisteredFactory(t *testing.T) {
	var got opened
	storage.Register("TestOpenStorage", func(_ context.Context, params map[string]any, namespace string) (storage.Driver, error) {
		got = opened{params, namespace}
		return nil, nil
	})
	if _, err := storage.Open(context.Background(), "TestOpenStorage", map[string]any{"k": "v"}, "builds"); err != nil {
		t.Fatal(err)
	}
	if got.params["k"] != "v" || got.namespace != "builds" {
		t.Errorf("factory got %+v", got)
	}
}

func TestOpenUnknownDriver(t *testing.T) {
	_, err := storage.Open(context.Background(), "S3Storage", map[string]any{}, "")
	if err == nil || !strings.Contains(err.Error(), `"S3Storage" is not supported`) || !strings.Contains(err.Error(), "LocalStorage") {
		t.Errorf("Open of an unknown driver = %v, want an error naming it and the drivers built in", err)
	}
}

func TestOpenRefusesNamespacePaths(t *testing.T) {
	for _, ns := range []string{"..", "a/b", "../builds", "."} {
		if _, err := storage.Open(context.Background(), "LocalStorage", map[string]any{"storage_path": t.TempDir()}, ns); err == nil {
			t.Errorf("Open with namespace %q succeeded", ns)
		}
	}
}

func TestRegisterPanics(t *testing.T) {
	for name, register := range map[string]func(){
		"duplicate": func() {
			storage.Register("LocalStorage", func(context.Context, map[string]any, string) (storage.Driver, error) { return nil, nil })
		},
		"nil factory": func() { storage.Register("TestNilStorage", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Register did not panic")
				}
			}()
			register()
		})
	}
}
