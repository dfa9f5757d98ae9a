package kubernetes

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/executors"
)

func TestConfigFromMapReadsQuaysKeys(t *testing.T) {
	c, err := ConfigFromMap(map[string]any{
		"EXECUTOR": "kubernetesPodman", "NAME": "k8s", "SETUP_TIME": 180, "MINIMUM_RETRY_THRESHOLD": 1,
		"K8S_API_SERVER": "10.0.0.1:6443", "K8S_API_TLS_CA": "/ca.crt", "SERVICE_ACCOUNT_TOKEN": "tok",
		"BUILDER_NAMESPACE": "builds", "SERVICE_ACCOUNT_NAME": "sa", "IMAGE_PULL_SECRET_NAME": "pull",
		"WORKER_IMAGE": "registry.example:5000/berth/worker", "WORKER_TAG": "v2",
		"CONTAINER_MEMORY_REQUEST": "1Gi", "CONTAINER_MEMORY_LIMITS": "2Gi",
		"CONTAINER_CPU_REQUEST": "500m", "CONTAINER_CPU_LIMITS": 2, "VOLUME_SIZE": "8G",
		"NODE_SELECTOR_LABEL_KEY": "pool", "NODE_SELECTOR_LABEL_VALUE": "builds",
		"TOLERATIONS":              []any{map[string]any{"key": "builds", "operator": "Exists", "effect": "NoSchedule"}},
		"RETENTION_AFTER_FINISHED": 60, "BUILDMAN_HOSTNAME": "berth.example", "ENGINE": "buildah",
		"HTTP_PROXY": "http://proxy:3128", "ENV": map[string]any{"A": 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "k8s" || c.Namespace != "builds" || c.ServiceAccountName != "sa" || c.ImagePullSecretName != "pull" {
		t.Errorf("names: %+v", c)
	}
	if c.Image != "registry.example:5000/berth/worker:v2" {
		t.Errorf("image %q", c.Image)
	}
	if q := c.Resources.Limits[corev1.ResourceCPU]; q.String() != "2" {
		t.Errorf("cpu limit %s", q.String())
	}
	if q := c.Resources.Requests[corev1.ResourceMemory]; q.String() != "1Gi" {
		t.Errorf("memory request %s", q.String())
	}
	if c.VolumeSize == nil || c.VolumeSize.String() != "8G" {
		t.Errorf("volume size %v", c.VolumeSize)
	}
	if c.NodeSelector["pool"] != "builds" || len(c.Tolerations) != 1 || c.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("placement %v %v", c.NodeSelector, c.Tolerations)
	}
	if c.Retention != time.Minute || c.Engine != "buildah" || !c.UserNamespaces || c.Env["HTTP_PROXY"] == "" || c.Env["A"] != "1" {
		t.Errorf("rest: %+v", c)
	}
	rc, err := c.API.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://10.0.0.1:6443" || rc.BearerToken != "tok" || rc.TLSClientConfig.CAFile != "/ca.crt" {
		t.Errorf("rest config %+v", rc)
	}
	if got := c.managerAddr("127.0.0.1:41000"); got != "berth.example:41000" {
		t.Errorf("manager address %q, want the manager's port on BUILDMAN_HOSTNAME", got)
	}
}

func TestConfigFromMapRefusesWhatItCannotHonour(t *testing.T) {
	for name, tc := range map[string]struct {
		m    map[string]any
		want string
	}{
		"Quay's VM mode":        {map[string]any{"BUILDER_VM_CONTAINER_IMAGE": "quay.io/quay/quay-builder-qemu"}, "virtual machine in a privileged pod"},
		"an unknown engine":     {map[string]any{"ENGINE": "docker"}, "ENGINE must be one of"},
		"a bad quantity":        {map[string]any{"CONTAINER_MEMORY_LIMITS": "lots"}, "CONTAINER_MEMORY_LIMITS must be a Kubernetes quantity"},
		"root on the node":      {map[string]any{"USER_NAMESPACES": false}, "node's root"},
		"a bad toleration":      {map[string]any{"TOLERATIONS": []any{map[string]any{"operator": "Maybe"}}}, "operator must be Equal or Exists"},
		"a number for a string": {map[string]any{"BUILDER_NAMESPACE": 3}, "BUILDER_NAMESPACE must be a string"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ConfigFromMap(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
	c, err := ConfigFromMap(map[string]any{"K8S_API_SERVER": "https://k8s:6443"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.API.RESTConfig(); err == nil || !strings.Contains(err.Error(), "SERVICE_ACCOUNT_TOKEN") {
		t.Errorf("an API server without credentials: %v", err)
	}
}

// The Job the executor submits keeps the worker's secrets out of its
// spec, runs unprivileged in a user namespace, and leaves retries to berth.
func TestJobShape(t *testing.T) {
	c, err := ConfigFromMap(map[string]any{"WORKER_IMAGE": "10.244.0.1:5000/berth/worker:1", "CONTAINER_MEMORY_LIMITS": "1Gi"})
	if err != nil {
		t.Fatal(err)
	}
	spec := executors.WorkerSpec{BuildID: "b1", Attempt: 2, Lifetime: time.Hour, RegistrationToken: "secret-token",
		ManagerAddr: "10.244.0.1:9000", ManagerCAPEM: "-----BEGIN CERTIFICATE-----"}
	o := c.makeObjects("berth-build-b1-x", "inst", spec, map[string]string{"BERTH_EGRESS": "policy"})
	j := o.job
	if *j.Spec.BackoffLimit != 0 || *j.Spec.ActiveDeadlineSeconds != 3600 || *j.Spec.TTLSecondsAfterFinished != 120 {
		t.Errorf("job spec: backoff %d deadline %d ttl %d", *j.Spec.BackoffLimit, *j.Spec.ActiveDeadlineSeconds, *j.Spec.TTLSecondsAfterFinished)
	}
	for _, l := range []string{LabelBuild, LabelAttempt, LabelInstance} {
		if j.Labels[l] == "" || j.Spec.Template.Labels[l] != j.Labels[l] {
			t.Errorf("label %s missing on the Job or its pods", l)
		}
	}
	p := j.Spec.Template.Spec
	if p.RestartPolicy != corev1.RestartPolicyNever || *p.AutomountServiceAccountToken || *p.EnableServiceLinks || *p.HostUsers {
		t.Errorf("pod spec: %+v", p)
	}
	ctr := p.Containers[0]
	sc := ctr.SecurityContext
	if *sc.Privileged {
		t.Error("the worker container is privileged")
	}
	// The sandbox's needs, and nothing more (containerSecurity says why).
	if fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" || fmt.Sprint(sc.Capabilities.Add) != "[SETUID SETGID SETFCAP]" {
		t.Errorf("capabilities %+v", sc.Capabilities)
	}
	if *sc.ProcMount != corev1.UnmaskedProcMount || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined {
		t.Errorf("procMount %v, seccomp %v", *sc.ProcMount, sc.SeccompProfile.Type)
	}
	if q := ctr.Resources.Limits["berth.dev/tun"]; q.Value() != 1 {
		t.Errorf("limits %v: no tap device", ctr.Resources.Limits)
	}
	if q := ctr.Resources.Limits[corev1.ResourceMemory]; q.String() != "1Gi" {
		t.Errorf("limits %v: the memory limit is lost", ctr.Resources.Limits)
	}
	if _, shared := c.Resources.Limits["berth.dev/tun"]; shared {
		t.Error("the executor's own resources were changed")
	}
	for _, env := range ctr.Env {
		if strings.Contains(env.Value, "secret-token") || strings.Contains(env.Value, "CERTIFICATE") {
			t.Errorf("a secret in the Job spec: %s=%s", env.Name, env.Value)
		}
		if env.Name == "BERTH_REGISTRATION_TOKEN" && (env.ValueFrom == nil || env.ValueFrom.SecretKeyRef.Name != o.secret.Name) {
			t.Errorf("the token does not come from the worker's Secret: %+v", env)
		}
	}
	if string(o.secret.Data[secretToken]) != "secret-token" || string(o.secret.Data[secretCA]) == "" {
		t.Errorf("secret data %v", o.secret.Data)
	}
}
