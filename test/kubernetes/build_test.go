package kubernetes

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/test/harness"
)

// kubernetesConfig is berth's config.yaml with the Kubernetes executor
// (BuildKit in its pods) first and the local one behind it, workers
// reaching the manager and the registry on the gateway.
func (fx *fixture) kubernetesConfig() string {
	addr := fx.berth.Addr
	return fmt.Sprintf(`SERVER_HOSTNAME: %[1]s
OUTBOUND_ALLOWED_NETWORKS: ["127.0.0.0/8", "10.244.0.0/24"]
BUILD_MANAGER:
- ephemeral
- ALLOWED_WORKER_COUNT: 2
  BUILD_TIME_LIMIT: 900
  WORKER_GRPC_LISTEN: "%[2]s:0"
  EXECUTORS:
  - EXECUTOR: kubernetes
    NAME: k8s
    K8S_API_SERVER: https://127.0.0.1:16443
    K8S_API_TLS_CA: %[3]s
    SERVICE_ACCOUNT_TOKEN: %[4]s
    BUILDER_NAMESPACE: %[5]s
    SERVICE_ACCOUNT_NAME: default
    BUILDMAN_HOSTNAME: %[2]s
    WORKER_IMAGE: %[1]s/%[6]s/worker
    WORKER_TAG: %[7]s
    ENGINE: buildkit
    CONTAINER_MEMORY_LIMITS: 2Gi
    SETUP_TIME: 180
  - EXECUTOR: local
    NAME: local
`, addr, gatewayIP, fx.berth.caFile, fx.berth.executorToken, fx.namespace, berthUser, workerTag)
}

// restartBerth restarts the shared berth with config.
func (fx *fixture) restartBerth(ctx context.Context, t *testing.T, config string) {
	t.Helper()
	if err := fx.berth.Stop(); err != nil {
		t.Fatalf("stop berth: %v", err)
	}
	if err := os.WriteFile(fx.berth.ConfigPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fx.berth.Start(ctx); err != nil {
		t.Fatalf("start berth: %v", err)
	}
}

// TestWorkerImagePullFailure submits a build to a berth whose Kubernetes
// executor names a worker tag that does not exist. The build's Job, as the
// cluster stored it, is unprivileged, in a user namespace, with its token
// in a Secret; the build log names the image that cannot be pulled well
// within SETUP_TIME and the attempt is retried; a cancel leaves no Job,
// pod or Secret of the build behind.
func TestWorkerImagePullFailure(t *testing.T) {
	requireCluster(t)
	fx := setupFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fx.restartBerth(ctx, t, strings.Replace(fx.kubernetesConfig(), "WORKER_TAG: "+workerTag, "WORKER_TAG: no-such-tag", 1))
	submitted := time.Now()
	c, b := fx.submitBuild(ctx, t, "pullfail", "x", copyDockerfile)
	job := fx.waitJobOf(ctx, t, b.ID)
	checkStoredJob(t, job)

	image := fx.berth.Addr + "/" + berthUser + "/worker:no-such-tag"
	var named, retried time.Duration
	poll(ctx, t, "the build log to name the image and retry", func() (bool, error) {
		logs, err := c.Logs(ctx, berthUser+"/pullfail", b.ID, 0)
		if err != nil {
			return false, err
		}
		for _, e := range logs {
			if named == 0 && strings.Contains(e.Message, image) {
				named = time.Since(submitted)
				t.Logf("after %s: %s", named.Round(time.Millisecond), e.Message)
			}
			if retried == 0 && strings.HasPrefix(e.Message, "Attempt 1 of ") && strings.Contains(e.Message, "cannot be pulled") {
				retried = time.Since(submitted)
				t.Logf("after %s: %s", retried.Round(time.Millisecond), e.Message)
			}
		}
		return named > 0 && retried > 0, nil
	})
	if retried > 2*time.Minute {
		t.Errorf("the pull failure ended the attempt after %s, not within SETUP_TIME (3 min) with room to spare", retried)
	}

	if err := c.Cancel(ctx, berthUser+"/pullfail", b.ID); err != nil {
		t.Fatal(err)
	}
	fx.waitBuildGone(ctx, t, b.ID)
}

// submitBuild creates repository berth/repo and submits a build of the
// context entries make, tagged tag, through the REST API.
func (fx *fixture) submitBuild(ctx context.Context, t *testing.T, repo, tag string, entries ...harness.Entry) (*harness.Client, *harness.Build) {
	t.Helper()
	c := harness.NewClient(fx.berth.Server)
	if err := c.CreateRepo(ctx, berthUser, repo); err != nil {
		t.Fatal(err)
	}
	archive, err := harness.TarGz(entries...)
	if err != nil {
		t.Fatal(err)
	}
	fileID, err := c.Upload(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.RequestBuild(ctx, berthUser+"/"+repo, harness.BuildRequest{FileID: fileID, DockerTags: []string{tag}})
	if err != nil {
		t.Fatal(err)
	}
	return c, b
}

// copyDockerfile is a context whose build needs no base image and no RUN.
var copyDockerfile = harness.Entry{Name: "Dockerfile", Body: "FROM scratch\nCOPY Dockerfile /\n"}

// waitBuildGone waits until no Job, pod or Secret of build id is left in
// the cluster.
func (fx *fixture) waitBuildGone(ctx context.Context, t *testing.T, buildID string) {
	t.Helper()
	poll(ctx, t, "nothing of the build left in the cluster", func() (bool, error) {
		sel := metav1.ListOptions{LabelSelector: "berth.dev/build=" + buildID}
		jobs, err := fx.admin.BatchV1().Jobs(fx.namespace).List(ctx, sel)
		if err != nil {
			return false, err
		}
		pods, err := fx.admin.CoreV1().Pods(fx.namespace).List(ctx, sel)
		if err != nil {
			return false, err
		}
		secrets, err := fx.admin.CoreV1().Secrets(fx.namespace).List(ctx, sel)
		if err != nil {
			return false, err
		}
		return len(jobs.Items)+len(pods.Items)+len(secrets.Items) == 0, nil
	})
}

// waitJobOf waits for the Job of build id and returns it as stored.
func (fx *fixture) waitJobOf(ctx context.Context, t *testing.T, buildID string) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	poll(ctx, t, "the Job of build "+buildID, func() (bool, error) {
		list, err := fx.admin.BatchV1().Jobs(fx.namespace).List(ctx, metav1.ListOptions{LabelSelector: "berth.dev/build=" + buildID})
		if err != nil || len(list.Items) == 0 {
			return false, err
		}
		job = &list.Items[0]
		return true, nil
	})
	return job
}

// TestRestartMidAttempt kills berth while a build's Job waits for its
// worker and starts it again: the restarted server finds the Job of the
// attempt it lost, supervises it, fails the attempt over when its setup
// time lapses (deleting that Job) and starts the next one; a cancel then
// leaves nothing of the build in the cluster.
func TestRestartMidAttempt(t *testing.T) {
	requireCluster(t)
	fx := setupFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	config := fx.kubernetesConfig()
	config = strings.Replace(config, "WORKER_TAG: "+workerTag, "WORKER_TAG: no-such-tag", 1)
	config = strings.Replace(config, "SETUP_TIME: 180", "SETUP_TIME: 20", 1)
	fx.restartBerth(ctx, t, config)
	c, b := fx.submitBuild(ctx, t, "restart", "x", copyDockerfile)
	first := fx.waitJobOf(ctx, t, b.ID)
	if err := fx.berth.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := fx.berth.Start(ctx); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "the lost attempt failed over and its Job gone", func() (bool, error) {
		logs, err := c.Logs(ctx, berthUser+"/restart", b.ID, 0)
		if err != nil {
			return false, err
		}
		failed := false
		for _, e := range logs {
			failed = failed || strings.HasPrefix(e.Message, "Attempt 1 of ")
		}
		_, err = fx.admin.BatchV1().Jobs(fx.namespace).Get(ctx, first.Name, metav1.GetOptions{})
		return failed && apierrors.IsNotFound(err), nil
	})
	if err := c.Cancel(ctx, berthUser+"/restart", b.ID); err != nil {
		t.Fatal(err)
	}
	fx.waitBuildGone(ctx, t, b.ID)
}
