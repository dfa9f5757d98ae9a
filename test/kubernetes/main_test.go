// Package kubernetes runs berth's Kubernetes groundwork against a real
// single-node cluster on this machine: etcd, kube-apiserver with RBAC,
// controller-manager, scheduler, containerd 2 and the kubelet, started by
// cluster/up.sh from the binaries cluster/build.sh caches outside the
// checkout (/var/cache/berth/k8s-<version>, or BERTH_K8S_CACHE).
//
// TestMain brings the cluster up in a fresh state directory and takes it
// down, leaving the host as it was, whatever the tests did. The tests skip,
// saying why, only when the cached binaries are missing (or the run is not
// root) and BERTH_E2E_REQUIRE is unset; with it set, that is a failure.
package kubernetes

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/test/harness"
)

// gatewayIP is the host's address on the pod bridge (cluster/common.sh): a
// registry listening there is what containerd pulls the pods' images from.
const gatewayIP = "10.244.0.1"

var (
	// skipReason, when set, is why every test skips.
	skipReason string
	// setupErr, when set, fails every test: the cluster did not come up.
	setupErr error
	// kubeconfig is the admin kubeconfig (group system:masters).
	kubeconfig string
	// state is the cluster's state directory (up.sh --state): its pids/
	// name the cluster's processes.
	state string
	// scripts is the directory of up.sh and down.sh.
	scripts string
	// registryListener holds the registry port on the gateway address from
	// cluster start, the port containerd was told to trust.
	registryListener net.Listener
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var err error
	scripts, err = filepath.Abs("cluster")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubernetes:", err)
		return 1
	}
	if reason := missingPrerequisite(); reason != "" {
		if os.Getenv("BERTH_E2E_REQUIRE") != "" {
			fmt.Fprintf(os.Stderr, "kubernetes: %s (BERTH_E2E_REQUIRE is set)\n", reason)
			return 1
		}
		skipReason = reason + ": SKIPPING every kubernetes end-to-end test"
		fmt.Fprintln(os.Stderr, "kubernetes:", skipReason)
		return m.Run()
	}
	state, err = os.MkdirTemp("", "berth-k8s-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubernetes:", err)
		return 1
	}
	kubeconfig = filepath.Join(state, "admin.kubeconfig")
	down := func() error { return script(filepath.Join(scripts, "down.sh"), "--state", state, "--purge") }

	// An interrupted run still takes the cluster down.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		fmt.Fprintln(os.Stderr, "kubernetes: interrupted, taking the cluster down")
		_ = down()
		os.Exit(1)
	}()

	setupErr = up(scripts, state)
	if setupErr != nil {
		fmt.Fprintf(os.Stderr, "kubernetes: cluster setup failed: %v\n", setupErr)
	}
	code := m.Run()
	if registryListener != nil {
		registryListener.Close()
	}
	if shared != nil {
		// berth stops its workers' Jobs before the cluster goes.
		if err := shared.berth.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kubernetes: stopping berth: %v\n", err)
		}
		os.RemoveAll(shared.berth.Opts.Dir)
	}
	if err := down(); err != nil {
		fmt.Fprintf(os.Stderr, "kubernetes: taking the cluster down: %v\n", err)
		code = 1
	}
	return code
}

// missingPrerequisite says what keeps the cluster from starting here, or "".
func missingPrerequisite() string {
	cache := os.Getenv("BERTH_K8S_CACHE")
	if cache == "" {
		cache = "/var/cache/berth/k8s-1.37.2"
	}
	if _, err := os.Stat(filepath.Join(cache, "VERSIONS")); err != nil {
		return fmt.Sprintf("no cluster binaries in %s (run test/kubernetes/cluster/build.sh, about 15 minutes once)", cache)
	}
	if os.Geteuid() != 0 {
		return "the cluster needs root"
	}
	return ""
}

// up starts the cluster, trusting a plain-HTTP registry on a port of the
// gateway address, with berth's tap device plugin beside the kubelet, and
// then holds that port for the tests.
func up(scripts, state string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	berth, err := harness.BerthBinary()
	if err != nil {
		return err
	}
	registry := net.JoinHostPort(gatewayIP, strconv.Itoa(port))
	if err := script(filepath.Join(scripts, "up.sh"), "--state", state, "--registry", registry, "--tun-plugin", berth); err != nil {
		return err
	}
	registryListener, err = net.Listen("tcp", registry)
	if err != nil {
		return fmt.Errorf("listen on the registry address containerd trusts: %w", err)
	}
	return nil
}

// freePort returns a TCP port that was free on loopback a moment ago; the
// gateway address exists only once up.sh made the bridge.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// script runs a cluster script with its output on stderr, beside the tests'.
func script(path string, args ...string) error {
	cmd := exec.CommandContext(context.Background(), path, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}

// requireCluster skips or fails t as TestMain found the cluster.
func requireCluster(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if setupErr != nil {
		t.Fatalf("cluster setup failed: %v", setupErr)
	}
}
