package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestReadPodTurnsStatesIntoWords(t *testing.T) {
	const image = "10.244.0.1:5000/berth/worker:nope"
	waiting := func(reason, msg string) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: containerName, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}
	}
	limited := corev1.PodSpec{Containers: []corev1.Container{{Name: containerName,
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}}}}
	for name, tc := range map[string]struct {
		spec   corev1.PodSpec
		status corev1.PodStatus
		ended  bool
		words  []string
	}{
		"unschedulable": {status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: "0/1 nodes are available: 1 Insufficient memory."}}},
			words: []string{"waits for a node", "Insufficient memory"}},
		"pull error":   {status: waiting("ErrImagePull", "not found"), words: []string{"pulling the worker image " + image, "not found"}},
		"pull backoff": {status: waiting("ImagePullBackOff", "Back-off pulling"), ended: true, words: []string{image, "cannot be pulled"}},
		"oom": {spec: limited, status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
			Name: containerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}}}}},
			ended: true, words: []string{"more than its memory limit of 256Mi"}},
		"evicted": {status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: ephemeral-storage."},
			ended: true, words: []string{"evicted", "ephemeral-storage"}},
		"deadline": {status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "DeadlineExceeded"}, ended: true, words: []string{"deadline"}},
		"exit code": {status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
			Name: containerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 2, Message: "no\nmanager"}}}}},
			ended: true, words: []string{"exited with code 2: no manager"}},
		"succeeded": {status: corev1.PodStatus{Phase: corev1.PodSucceeded}, ended: true},
	} {
		t.Run(name, func(t *testing.T) {
			got := readPod(&corev1.Pod{Spec: tc.spec, Status: tc.status}, image)
			if got.Ended != tc.ended {
				t.Errorf("ended = %v, want %v (%q)", got.Ended, tc.ended, got.Reason)
			}
			for _, w := range tc.words {
				if !strings.Contains(got.Reason, w) {
					t.Errorf("reason %q does not say %q", got.Reason, w)
				}
			}
			if len(tc.words) == 0 && got.Reason != "" {
				t.Errorf("reason %q for a worker that ended well", got.Reason)
			}
		})
	}
	if n := readPod(&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, image); n != (podNews{}) {
		t.Errorf("a running pod is news: %+v", n)
	}
}
