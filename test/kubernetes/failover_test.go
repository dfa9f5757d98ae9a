package kubernetes

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// TestFailoverToLocal stops the cluster's API server under a berth whose
// executors are [kubernetes, local]: a build submitted then cannot start
// its Job, runs on the local executor instead, and completes with an image
// that holds its file. The API server is started again afterwards.
func TestFailoverToLocal(t *testing.T) {
	requireCluster(t)
	fx := setupFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fx.restartBerth(ctx, t, fx.kubernetesConfig())

	stopAPIServer(t)
	t.Cleanup(func() {
		if err := script(filepath.Join(scripts, "up.sh"), "--state", state); err != nil {
			t.Errorf("starting the API server again: %v", err)
		}
	})

	stamp := harness.RandomHex(6)
	c, b := fx.submitBuild(ctx, t, "failover", stamp,
		harness.Entry{Name: "Dockerfile", Body: "FROM scratch\nCOPY stamp /stamp\n"},
		harness.Entry{Name: "stamp", Body: stamp})
	final, err := c.Wait(ctx, berthUser+"/failover", b.ID, time.Second, func(b *harness.Build) bool {
		return b.Phase == "complete" || b.Phase == "error" || b.Phase == "internalerror" || b.Phase == "cancelled"
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if final.Phase != "complete" {
		t.Fatalf("build ended %s: %v\n%s", final.Phase, final.Error, fx.berth.Tail(40))
	}
	serverLog := fx.berth.Tail(400)
	if !strings.Contains(serverLog, "executor could not start a worker; trying the next") || !strings.Contains(serverLog, "executor=local") {
		t.Errorf("the server log does not show the failover from k8s to local:\n%s", fx.berth.Tail(40))
	}
	files, err := fx.berth.tools.ReadImageFiles(ctx, fx.berth.Addr+"/"+berthUser+"/failover:"+stamp, fx.berth.Creds(), "/stamp")
	if err != nil {
		t.Fatal(err)
	}
	if files["/stamp"] != stamp {
		t.Errorf("/stamp in the image = %q, want %q", files["/stamp"], stamp)
	}
}

// stopAPIServer kills the cluster's kube-apiserver, as a crash would (a
// graceful stop waits for its watchers), and waits until it is gone.
func stopAPIServer(t *testing.T) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(state, "pids", "kube-apiserver"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver %d still running 30 s after SIGKILL", pid)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// running is whether pid is a live process: not gone, and no zombie (the
// cluster's processes are nobody's children here; init reaps them late).
func running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command, which is in parentheses.
	rest := stat[strings.LastIndexByte(string(stat), ')')+1:]
	return !strings.HasPrefix(strings.TrimSpace(string(rest)), "Z")
}
