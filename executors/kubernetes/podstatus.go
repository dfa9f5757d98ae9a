package kubernetes

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// podNews is what a pod's status says about its worker: Reason in words
// for the build log, and whether the worker is gone (or will never run).
// A zero podNews means nothing worth telling.
type podNews struct {
	Reason string
	Ended  bool
}

// readPod turns the state of a worker's pod into news; image is the worker
// image, named when it cannot be pulled.
func readPod(pod *corev1.Pod, image string) podNews {
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		return podNews{Ended: true}
	case corev1.PodFailed:
		return podNews{Ended: true, Reason: failedPodReason(pod)}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull":
				return podNews{Reason: fmt.Sprintf("pulling the worker image %s failed: %s", image, oneLine(w.Message))}
			case "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
				return podNews{Ended: true, Reason: fmt.Sprintf("the worker image %s cannot be pulled (%s): %s", image, w.Reason, oneLine(w.Message))}
			case "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
				return podNews{Reason: fmt.Sprintf("the worker's container cannot start yet (%s): %s", w.Reason, oneLine(w.Message))}
			}
		}
		if t := cs.State.Terminated; t != nil {
			return podNews{Ended: true, Reason: terminatedReason(pod, t)}
		}
	}
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
			return podNews{Reason: "the worker's pod waits for a node: " + oneLine(cond.Message)}
		}
	}
	return podNews{}
}

func failedPodReason(pod *corev1.Pod) string {
	switch pod.Status.Reason {
	case "Evicted":
		return "the worker's pod was evicted: " + oneLine(pod.Status.Message)
	case "DeadlineExceeded":
		return "the worker's pod ran past the build's deadline and was stopped"
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			return terminatedReason(pod, t)
		}
	}
	if pod.Status.Message != "" {
		return "the worker's pod failed: " + oneLine(pod.Status.Message)
	}
	return ""
}

func terminatedReason(pod *corev1.Pod, t *corev1.ContainerStateTerminated) string {
	if t.Reason == "OOMKilled" {
		limit := "its memory limit"
		for _, c := range pod.Spec.Containers {
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && c.Name == containerName {
				limit = "its memory limit of " + q.String() + " (CONTAINER_MEMORY_LIMITS)"
			}
		}
		return "the worker was killed for using more than " + limit
	}
	if t.ExitCode == 0 {
		return ""
	}
	msg := fmt.Sprintf("the worker exited with code %d", t.ExitCode)
	if t.Reason != "" && t.Reason != "Error" {
		msg += " (" + t.Reason + ")"
	}
	if t.Message != "" {
		msg += ": " + oneLine(t.Message)
	}
	return msg
}

// oneLine keeps a Kubernetes message on one line of the build log.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
