package main

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestZZStop(t *testing.T) {
	if os.Getenv("ZZ") == "" {
		t.Skip()
	}
	ctx := context.Background()
	s, err := startDistribution(ctx, "/work/main/.tools/bin/registry", os.TempDir(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newClient(s.url, "", "", 8)
	img, _ := makeImage()
	if err := pushImage(ctx, c, "u/t", "base", img); err != nil {
		t.Fatal(err)
	}
	if _, err := putTags(ctx, c, "u/t", img, 0, 3000, 8, make([][]byte, 8)); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("du", "-s", "--inodes", s.tmpDir).CombinedOutput()
	t.Logf("inodes: %s", out)
	start := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.exited
	t.Logf("exit after SIGTERM: %s", time.Since(start))
	start = time.Now()
	os.RemoveAll(s.tmpDir)
	t.Logf("RemoveAll: %s", time.Since(start))
}
