package kubernetes

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// buildJob is the shape of Job the executor will submit: one try, no
// service-account token or service variables in the pod, the pod's users
// mapped into a user namespace, and the process unprivileged inside it.
func buildJob(name, image, script string) *batchv1.Job {
	no, yes := false, true
	uid := int64(1000)
	backoff := int32(0)
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoff,
			Template: corev1.PodTemplateSpec{
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: &no,
					EnableServiceLinks:           &no,
					HostUsers:                    &no,
					DNSPolicy:                    corev1.DNSDefault,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   &yes,
						RunAsUser:      &uid,
						RunAsGroup:     &uid,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "build",
						Image:           image,
						ImagePullPolicy: corev1.PullAlways,
						Command:         []string{"/bin/sh", "-c", script},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &no,
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

// TestJobAsExecutorServiceAccount applies the executor's shipped RBAC
// (deploy/kubernetes/rbac.yaml) in one namespace and, with a token the TokenRequest API issued for
// it, runs a Job whose image comes from a registry on the bridge gateway.
// The Job must complete in a user namespace as uid 1000, its log must be
// readable through the API, and the same account must be refused a Job in
// any other namespace.
func TestJobAsExecutorServiceAccount(t *testing.T) {
	requireCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	image := serveBusybox(t)
	adminConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin := kubernetes.NewForConfigOrDie(adminConfig)

	builds := createNamespace(ctx, t, admin, "berth-builds")
	other := createNamespace(ctx, t, admin, "berth-other")
	executor, _, err := shippedExecutorAccount(ctx, admin, adminConfig, builds)
	if err != nil {
		t.Fatal(err)
	}

	refused := buildJob("refused", image, "true")
	_, err = executor.BatchV1().Jobs(other).Create(ctx, refused, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("a Job in namespace %s as the executor: got %v, want 403 Forbidden", other, err)
	}

	job := buildJob("hello", image, "echo hello from berth; id -u; cat /proc/self/uid_map")
	if _, err := executor.BatchV1().Jobs(builds).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the Job as the executor: %v", err)
	}
	pod := waitForJob(ctx, t, admin, builds, job.Name)

	raw, err := executor.CoreV1().Pods(builds).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("read the pod's log as the executor: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 3 || lines[0] != "hello from berth" || lines[1] != "1000" {
		t.Fatalf("pod log = %q, want the greeting, uid 1000 and the uid map", raw)
	}
	// Identity is "0 0 4294967295"; in a user namespace, uid 0 maps to a
	// block of high host ids.
	mapping := strings.Fields(lines[2])
	if len(mapping) != 3 || mapping[0] != "0" || mapping[1] == "0" {
		t.Fatalf("pod uid_map = %q, want uid 0 mapped to a non-zero host id (a user namespace)", lines[2])
	}
	t.Logf("pod %s ran as uid 1000 with uid_map %q", pod, lines[2])

	stored, err := admin.BatchV1().Jobs(builds).Get(ctx, job.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := stored.Spec.Template.Spec
	if spec.HostUsers == nil || *spec.HostUsers {
		t.Errorf("stored Job: hostUsers = %v, want false", spec.HostUsers)
	}
	for _, c := range spec.Containers {
		if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
			t.Errorf("stored Job: container %s is privileged", c.Name)
		}
	}
}

// serveBusybox pushes a busybox image to the package's berth, on the
// gateway port containerd trusts, as a public repository, and returns its
// reference there.
func serveBusybox(t *testing.T) string {
	t.Helper()
	fx := setupFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref := fx.berth.Addr + "/" + berthUser + "/busybox:latest"
	if err := fx.berth.tools.PushBusybox(ctx, ref, fx.berth.Creds()); err != nil {
		t.Fatal(err)
	}
	if err := harness.NewClient(fx.berth.Server).SetVisibility(ctx, berthUser+"/busybox", "public"); err != nil {
		t.Fatal(err)
	}
	return ref
}

// createNamespace makes a namespace whose pods must meet the restricted
// Pod Security Standard, and waits for its default service account, which
// pods cannot be admitted without.
func createNamespace(ctx context.Context, t *testing.T, admin kubernetes.Interface, prefix string) string {
	t.Helper()
	ns, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: prefix + "-",
		Labels:       map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	if err := waitDefaultAccount(ctx, admin, ns.Name); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// waitForJob waits for the Job to complete and returns its pod's name; a
// failed Job fails the test with its pod's state.
func waitForJob(ctx context.Context, t *testing.T, admin kubernetes.Interface, namespace, name string) string {
	t.Helper()
	poll(ctx, t, "Job "+name+" to finish", func() (bool, error) {
		job, err := admin.BatchV1().Jobs(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				return true, nil
			case batchv1.JobFailed:
				return false, fmt.Errorf("job failed (%s: %s); pods: %s", c.Reason, c.Message, describePods(ctx, admin, namespace, name))
			}
		}
		return false, nil
	})
	pods, err := admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + name})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("Job %s has %d pods, want 1", name, len(pods.Items))
	}
	return pods.Items[0].Name
}

// describePods summarises the Job's pods' container states and events,
// for a failure message.
func describePods(ctx context.Context, admin kubernetes.Interface, namespace, job string) string {
	pods, err := admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "\n  pod %s phase %s", p.Name, p.Status.Phase)
		for _, s := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, "\n    container %s: %+v", s.Name, s.State)
		}
		events, err := admin.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			continue
		}
		for _, e := range events.Items {
			fmt.Fprintf(&b, "\n    event %s %s: %s", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}

// poll calls done every half second until it reports true, failing t on
// its error or when ctx ends.
func poll(ctx context.Context, t *testing.T, what string, done func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := done()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}
