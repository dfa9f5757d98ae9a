package kubernetes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/test/harness"
)

// kubernetesConfig is berth's config.yaml with the Kubernetes executor
// first and the local one behind it, workers reaching the manager and the
// registry on the gateway. extra is added to the Kubernetes entry.
func (fx *fixture) kubernetesConfig(extra string) string {
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
    CONTAINER_MEMORY_LIMITS: 2Gi
    SETUP_TIME: 180
%[8]s  - EXECUTOR: local
    NAME: local
`, addr, gatewayIP, fx.berth.caFile, fx.berth.executorToken, fx.namespace, berthUser, workerTag, indent(extra, "    "))
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
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

// TestBuildRunsAsJob submits a build through the API of a berth whose
// first executor is Kubernetes: the worker runs as a Job whose pod pulled
// the worker image from this berth, builds with BuildKit, pushes, and the
// image podman pulls holds the file the Dockerfile wrote. The Job the
// cluster stored is unprivileged, in a user namespace, with its token in a
// Secret.
func TestBuildRunsAsJob(t *testing.T) {
	requireCluster(t)
	fx := setupFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	fx.restartBerth(ctx, t, fx.kubernetesConfig(""))
	c := harness.NewClient(fx.berth.Server)
	base := fx.berth.Addr + "/" + berthUser + "/busybox:latest"
	if err := fx.berth.tools.PushBusybox(ctx, base, fx.berth.Creds()); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateRepo(ctx, berthUser, "app"); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	stamp := harness.RandomHex(8)
	archive, err := harness.TarGz(
		harness.Entry{Name: "Dockerfile", Body: "FROM " + base + "\nRUN echo built-in-a-pod-" + stamp + " > /hello && id -u >> /hello\n"},
	)
	if err != nil {
		t.Fatal(err)
	}
	fileID, err := c.Upload(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.RequestBuild(ctx, berthUser+"/app", harness.BuildRequest{FileID: fileID, DockerTags: []string{stamp}})
	if err != nil {
		t.Fatal(err)
	}

	job := fx.waitJobOf(ctx, t, b.ID)
	checkStoredJob(t, job)
	pod := fx.podOf(ctx, t, job.Name)
	t.Logf("build %s runs as Job %s, pod %s", b.ID, job.Name, pod.Name)
	// In a user namespace the pod's uid 0 is a high, unprivileged host uid.
	if m, err := podUIDMap(pod); err != nil {
		t.Errorf("the worker's uid map: %v", err)
	} else if f := strings.Fields(m); len(f) < 3 || f[0] != "0" || f[1] == "0" {
		t.Errorf("the worker's uid_map = %q, want uid 0 mapped to a non-zero host uid", m)
	} else {
		t.Logf("the worker's uid_map: %s", m)
	}

	final, err := c.Wait(ctx, berthUser+"/app", b.ID, time.Second, func(b *harness.Build) bool {
		return b.Phase == "complete" || b.Phase == "error" || b.Phase == "internalerror" || b.Phase == "cancelled"
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := c.Logs(ctx, berthUser+"/app", b.ID, 0)
	if final.Phase != "complete" {
		t.Fatalf("build ended %s: %v\n%s", final.Phase, final.Error, logText(logs))
	}
	files, err := fx.berth.tools.ReadImageFiles(ctx, fx.berth.Addr+"/"+berthUser+"/app:"+stamp, fx.berth.Creds(), "/hello")
	if err != nil {
		t.Fatal(err)
	}
	if got := files["/hello"]; !strings.HasPrefix(got, "built-in-a-pod-"+stamp+"\n") {
		t.Fatalf("/hello in the pushed image = %q", got)
	}
	if !strings.Contains(logText(logs), "buildkit") && !strings.Contains(logText(logs), "BuildKit") {
		t.Errorf("the build log does not show BuildKit at work:\n%s", logText(logs))
	}
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

// podOf waits for the pod of Job name to run.
func (fx *fixture) podOf(ctx context.Context, t *testing.T, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	poll(ctx, t, "the pod of Job "+name, func() (bool, error) {
		list, err := fx.admin.CoreV1().Pods(fx.namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + name})
		if err != nil || len(list.Items) == 0 {
			return false, err
		}
		pod = &list.Items[0]
		return pod.Status.Phase != corev1.PodPending, nil
	})
	return pod
}

// checkStoredJob asserts on the Job as the API server stored it.
func checkStoredJob(t *testing.T, job *batchv1.Job) {
	t.Helper()
	spec := job.Spec.Template.Spec
	if spec.HostUsers == nil || *spec.HostUsers {
		t.Errorf("hostUsers = %v, want false", spec.HostUsers)
	}
	if job.Spec.BackoffLimit == nil || *job.Spec.BackoffLimit != 0 || spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("backoffLimit %v, restartPolicy %s: berth's retry rule must decide", job.Spec.BackoffLimit, spec.RestartPolicy)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod gets a service-account token")
	}
	if job.Spec.ActiveDeadlineSeconds == nil {
		t.Error("no activeDeadlineSeconds")
	}
	secretRef := false
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s may be or become privileged: %+v", c.Name, sc)
		}
		for _, e := range c.Env {
			if e.Name == "BERTH_REGISTRATION_TOKEN" {
				secretRef = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.Value == ""
			}
		}
	}
	if !secretRef {
		t.Error("the registration token is not taken from a Secret")
	}
}

// podUIDMap reads the uid_map of the worker process of pod, found on this
// node through its cgroup.
func podUIDMap(pod *corev1.Pod) (string, error) {
	uid := string(pod.UID)
	procs, err := filepath.Glob("/proc/[0-9]*/cgroup")
	if err != nil {
		return "", err
	}
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !(strings.Contains(string(b), uid) || strings.Contains(string(b), strings.ReplaceAll(uid, "-", "_"))) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if !strings.Contains(string(cmd), "worker") {
			continue
		}
		m, err := os.ReadFile(filepath.Join(filepath.Dir(p), "uid_map"))
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(m)), nil
	}
	return "", fmt.Errorf("no worker process of pod %s on this node", pod.Name)
}

func logText(es []harness.LogEntry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.Message + "\n")
	}
	return b.String()
}
