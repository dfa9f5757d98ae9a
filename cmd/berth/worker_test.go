package main

import (
	"context"
	"strings"
	"testing"
)

func TestRunWorkerFlags(t *testing.T) {
	t.Setenv("BERTH_MANAGER_ADDR", "")
	t.Setenv("BERTH_REGISTRATION_TOKEN", "")
	t.Setenv("BERTH_WORK_DIR", "")
	t.Setenv("BERTH_STORAGE_ROOT", "")
	err := runWorker(context.Background(), []string{"--manager", "127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "--token") || !strings.Contains(err.Error(), "--work-dir") || strings.Contains(err.Error(), "--manager") {
		t.Fatalf("runWorker with missing flags = %v", err)
	}
	if err := runWorker(context.Background(), []string{"extra"}); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Fatalf("runWorker with an argument = %v", err)
	}
	// From the environment, to a manager that is not there: registration
	// fails after the retry window instead of hanging.
	t.Setenv("BERTH_REGISTRATION_TOKEN", "tok")
	t.Setenv("BERTH_WORK_DIR", t.TempDir())
	t.Setenv("BERTH_STORAGE_ROOT", t.TempDir())
	t.Setenv("BERTH_LOG_LEVEL", "error")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := runWorker(ctx, []string{"--manager", "127.0.0.1:1", "--insecure"}); err == nil || !strings.Contains(err.Error(), "register") {
		t.Fatalf("runWorker without a manager = %v", err)
	}
}
