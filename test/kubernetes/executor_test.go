package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/executors"
	"github.com/berth-dev/berth/executors/executortest"
	"github.com/berth-dev/berth/executors/kubernetes"
	"github.com/berth-dev/berth/test/harness"
)

// TestExecutorContract runs the executors' shared suite against the
// Kubernetes executor on the real cluster: each worker is the real `berth
// worker` in a Job's pod, pulled from berth, registering with a fake build
// manager listening on the pod network's gateway. The executor acts only
// through the service account the shipped Role binds.
func TestExecutorContract(t *testing.T) {
	requireCluster(t)
	fx := setupFixture(t)
	executortest.Run(t, func(t *testing.T) executors.Executor {
		return fx.newExecutor(t, harness.RandomHex(4), nil)
	}, executortest.Options{
		ListenAddr:      net.JoinHostPort(gatewayIP, "0"),
		RegisterTimeout: 3 * time.Minute,
		EndTimeout:      time.Minute,
		Concurrency:     2,
		Track: func(t *testing.T, ex executors.Executor, id string) func() error {
			return func() error { return fx.leftovers(id) }
		},
	})
}

// newExecutor makes a Kubernetes executor for instance over the
// fixture's namespace, as the executor's service account, with the entry's
// keys plus extra.
func (fx *fixture) newExecutor(t *testing.T, instance string, extra map[string]any) *kubernetes.Executor {
	t.Helper()
	entry := map[string]any{
		"EXECUTOR": "kubernetes", "NAME": "k8s-" + instance,
		"BUILDER_NAMESPACE": fx.namespace, "SERVICE_ACCOUNT_NAME": "default",
		"WORKER_IMAGE": fx.workerImage, "CONTAINER_MEMORY_LIMITS": "1Gi",
	}
	for k, v := range extra {
		entry[k] = v
	}
	cfg, err := kubernetes.ConfigFromMap(entry)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ex, err := kubernetes.New(ctx, cfg, fx.executor, kubernetes.Options{
		Instance: instance, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ex.Close(context.Background()) })
	return ex
}

// leftovers names what is left of worker id's Job: the Job, its pods or
// its Secret, waiting a while for the garbage collector to remove the
// Secret the Job owned.
func (fx *fixture) leftovers(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for {
		var left []string
		if _, err := fx.admin.BatchV1().Jobs(fx.namespace).Get(ctx, id, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("Job %s (%v)", id, err))
		}
		pods, err := fx.admin.CoreV1().Pods(fx.namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + id})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			left = append(left, "pod "+p.Name)
		}
		if _, err := fx.admin.CoreV1().Secrets(fx.namespace).Get(ctx, id, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("Secret %s (%v)", id, err))
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still there after 45 s: %v", left)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// fixture is what the package's tests share: a namespace for builds, the
// executor's service account in it, and berth serving the worker image on
// the gateway.
type fixture struct {
	namespace   string
	admin       k8s.Interface
	executor    k8s.Interface
	workerImage string
	berth       *berthServer
}

var errNoFixture = errors.New("the shared fixture failed earlier")
