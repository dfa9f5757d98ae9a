package kubernetes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/test/harness"
)

// TestBuildInPod builds an image through the Kubernetes executor with
// BuildKit: the build's Job, as the cluster stored it, is unprivileged and
// in a user namespace; its worker runs as uid 0 of the pod, which the host
// sees as an unprivileged id; the RUN step runs in the worker's sandbox
// inside the pod, under the engine's seccomp filter, where berth's own
// address on the pod network is closed to it; the pushed image pulls with
// podman and holds what the Dockerfile wrote.
func TestBuildInPod(t *testing.T) {
	requireCluster(t)
	fx := setupFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	fx.restartBerth(ctx, t, fx.kubernetesConfig())
	base := fx.pushBase(ctx, t)

	// The RUN step records who it is, and whether berth itself (on the
	// gateway, a private address) answers from inside the sandbox.
	dockerfile := fmt.Sprintf(`FROM %s
RUN id -u > /run-uid && grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status > /run-status && (/bin/busybox wget -q -T 5 -O /dev/null http://%s/v2/ && echo reached || echo refused) > /egress
COPY greeting.txt /greeting.txt
`, base, fx.berth.Addr)
	greeting := "built in a pod " + strconv.FormatInt(time.Now().UnixNano(), 36)
	c, b := fx.submitBuild(ctx, t, "inpod", "v1",
		harness.Entry{Name: "Dockerfile", Body: dockerfile},
		harness.Entry{Name: "greeting.txt", Body: greeting})
	job := fx.waitJobOf(ctx, t, b.ID)
	checkStoredJob(t, job)

	// The worker's real uid map, read from the host while it runs.
	var hostMap string
	poll(ctx, t, "the worker's process on the host", func() (bool, error) {
		m, err := workerUIDMap()
		hostMap = m
		return err == nil && m != "", err
	})
	fields := strings.Fields(hostMap)
	if len(fields) < 3 || fields[0] != "0" || fields[1] == "0" {
		t.Errorf("the worker's uid_map on the host is %q: uid 0 of the pod must be a non-zero host id", hostMap)
	}
	t.Logf("worker uid_map on the host: %q", hostMap)

	done, err := c.Wait(ctx, berthUser+"/inpod", b.ID, time.Second, nil, func(phase string) { t.Logf("phase %s", phase) })
	if err != nil || done.Phase != "complete" {
		t.Fatalf("build ended %v (%v); log:\n%s", done, err, fx.buildLog(ctx, c, "inpod", b.ID))
	}
	files, err := fx.berth.tools.ReadImageFiles(ctx, fx.berth.Ref(berthUser+"/inpod:v1"), fx.berth.Creds(), "/greeting.txt", "/run-uid", "/run-status", "/egress")
	if err != nil {
		t.Fatalf("pull the built image: %v", err)
	}
	if files["/greeting.txt"] != greeting {
		t.Errorf("/greeting.txt = %q, want %q", files["/greeting.txt"], greeting)
	}
	if got := strings.TrimSpace(files["/run-uid"]); got != "0" {
		t.Errorf("the RUN step ran as uid %q, want 0 of its own namespace", got)
	}
	// The pod has no seccomp filter of the runtime's; the code the build
	// brings must still run under one, the engine's.
	if !strings.Contains(files["/run-status"], "Seccomp:\t2") {
		t.Errorf("the RUN step ran without a seccomp filter: %q", files["/run-status"])
	}
	if got := strings.TrimSpace(files["/egress"]); got != "refused" {
		t.Errorf("from the RUN step, berth's private address was %s; the sandbox must close it", got)
	}
	log := fx.buildLog(ctx, c, "inpod", b.ID)
	if !strings.Contains(log, "[1/3] RUN id -u") {
		t.Errorf("the build log shows no RUN step:\n%s", log)
	}
	fx.waitBuildGone(ctx, t, b.ID)
}

// pushBase pushes a busybox image to berth as berth/base:latest and
// returns its reference.
func (fx *fixture) pushBase(ctx context.Context, t *testing.T) string {
	t.Helper()
	ref := fx.berth.Ref(berthUser + "/base:latest")
	if err := fx.berth.tools.PushBusybox(ctx, ref, fx.berth.Creds()); err != nil {
		t.Fatal(err)
	}
	return ref
}

// buildLog is the build's log, one message a line.
func (fx *fixture) buildLog(ctx context.Context, c *harness.Client, repo, id string) string {
	entries, err := c.Logs(ctx, berthUser+"/"+repo, id, 0)
	if err != nil {
		return "(log unreadable: " + err.Error() + ")"
	}
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Message)
		b.WriteByte('\n')
	}
	return b.String()
}

// workerUIDMap is the uid map of the worker process of a Kubernetes pod
// on this host (the one whose work directory is the pod's scratch
// volume), or "" while there is none.
func workerUIDMap() (string, error) {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return "", err
	}
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("berth\x00worker")) {
			continue
		}
		env, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil || !bytes.Contains(env, []byte("BERTH_WORK_DIR=/var/lib/berth-worker/")) {
			continue
		}
		m, err := os.ReadFile(filepath.Join(p, "uid_map"))
		if err != nil {
			continue
		}
		return strings.TrimSpace(string(m)), nil
	}
	return "", nil
}

// checkStoredJob asserts on the Job as the API server stored it: what
// docs/kubernetes.md promises of a worker's pod.
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
		if sc == nil || sc.Privileged == nil || *sc.Privileged {
			t.Errorf("container %s may be privileged: %+v", c.Name, sc)
			continue
		}
		if sc.Capabilities == nil || fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" ||
			fmt.Sprint(sc.Capabilities.Add) != "[SETUID SETGID SETFCAP]" {
			t.Errorf("container %s capabilities %+v, want all dropped but the sandbox's three", c.Name, sc.Capabilities)
		}
		if sc.ProcMount == nil || *sc.ProcMount != corev1.UnmaskedProcMount {
			t.Errorf("container %s procMount %v, want Unmasked", c.Name, sc.ProcMount)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined {
			t.Errorf("container %s seccomp %+v, want Unconfined (the RUN steps get the engine's)", c.Name, sc.SeccompProfile)
		}
		if q := c.Resources.Limits["berth.dev/tun"]; q.Value() != 1 {
			t.Errorf("container %s limits %v, want one berth.dev/tun", c.Name, c.Resources.Limits)
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
