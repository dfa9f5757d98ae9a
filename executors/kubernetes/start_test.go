package kubernetes

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/berth-dev/berth/executors"
)

// A worker handed a manager address no pod can dial (loopback, or the
// unspecified address a listener on every interface reports) is refused
// before anything is created, naming the keys that fix it, so the build
// manager fails over at once. The clientset is client-go's fake: the
// refusal happens before any API call, which the test checks too.
func TestStartRefusesAManagerPodsCannotReach(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := fake.NewClientset()
	cfg, err := ConfigFromMap(map[string]any{"WORKER_IMAGE": "registry.example/berth/worker:1"})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := New(ctx, cfg, client, Options{Instance: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close(ctx)
	for _, addr := range []string{"127.0.0.1:41000", "[::]:55443", "localhost:55443"} {
		_, err := ex.Start(ctx, executors.WorkerSpec{BuildID: "b", Attempt: 1, RegistrationToken: "t", ManagerAddr: addr})
		if err == nil || !strings.Contains(err.Error(), "BUILDMAN_HOSTNAME") || !strings.Contains(err.Error(), "WORKER_GRPC_LISTEN") {
			t.Errorf("Start with the manager at %s: %v, want a refusal naming BUILDMAN_HOSTNAME and WORKER_GRPC_LISTEN", addr, err)
		}
	}
	for _, a := range client.Actions() {
		if a.GetVerb() == "create" {
			t.Errorf("a refused Start created %s", a.GetResource().Resource)
		}
	}
}
