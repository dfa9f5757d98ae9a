// Package kubernetes is the executor that runs each build worker as a
// Kubernetes Job in a cluster (EXECUTOR: kubernetes, or Quay's
// kubernetesPodman). One Job per attempt, with backoffLimit 0: berth's retry
// rule decides about another attempt. The registration token and the
// manager's CA reach the pod through a Secret the Job owns, never through
// the Job's spec. Pods run unprivileged in a user namespace.
//
// An informer follows the executor's pods and turns what Kubernetes says
// about them into words for the build log at once: a pod waiting for a
// node, an image that cannot be pulled, an out-of-memory kill, an eviction,
// a deadline, a pod deleted by someone else (executors.Reporter).
package kubernetes

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/berth-dev/berth/executors"
)

// Kind is the executor kind in config.yaml's EXECUTORS list.
const Kind = "kubernetes"

func init() {
	executors.Register(Kind, open)
	// Quay's unprivileged executor; berth's kubernetes kind is that one.
	executors.Register("kubernetesPodman", open)
}

// open is the kubernetes executor's executors.Factory.
func open(ctx context.Context, name string, params map[string]any, deps executors.Deps) (executors.Executor, error) {
	cfg, err := ConfigFromMap(params)
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = name
	}
	rc, err := cfg.API.RESTConfig()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes executor: %w", err)
	}
	return New(ctx, cfg, client, Options{Instance: InstanceID(deps.DataDir), WorkerEnv: deps.WorkerEnv, Logger: deps.Logger})
}

// Options are the executor's settings that come from the server, not from
// its EXECUTORS entry.
type Options struct {
	// Instance labels this server's Jobs: Running counts only them, and a
	// restarted server finds its own (InstanceID).
	Instance string
	// WorkerEnv is environment every worker gets (the server's network
	// policy); it wins over the entry's ENV.
	WorkerEnv map[string]string
	Logger    *slog.Logger
}

// InstanceID names a server for labels: its host name and data directory,
// hashed, so that two servers on one cluster never count each other's
// Jobs and a restarted one finds its own.
func InstanceID(dataDir string) string {
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte(host + "\x00" + dataDir))
	return hex.EncodeToString(sum[:8])
}

// Executor starts workers as Jobs. Create it with New and end it with
// Close.
type Executor struct {
	cfg    Config
	opts   Options
	client kubernetes.Interface
	log    *slog.Logger
	events *executors.EventQueue

	informer cache.SharedIndexInformer
	stopInf  chan struct{}

	mu sync.Mutex
	// told is the news last reported per execution, so that an update
	// that changes nothing is not reported twice.
	told map[string]podNews
	// stopping holds executions Stop ended (not reported as ended on
	// their own), stopped those it finished, for an idempotent Stop.
	stopping map[string]bool
	stopped  map[string]time.Time
	// seen holds executions whose pod the informer saw, to tell a pod
	// deleted by someone else from one that never existed.
	seen   map[string]bool
	closed bool
}

var (
	_ executors.Executor = (*Executor)(nil)
	_ executors.Reporter = (*Executor)(nil)
	_ executors.Closer   = (*Executor)(nil)
	_ executors.Lister   = (*Executor)(nil)
)

// New checks that the cluster answers and that the executor may do what
// it must in its namespace, starts following its pods, and returns the
// executor.
func New(ctx context.Context, cfg Config, client kubernetes.Interface, opts Options) (*Executor, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = Kind
	}
	e := &Executor{
		cfg: cfg, opts: opts, client: client,
		log:    opts.Logger.With("executor", cfg.Name, "namespace", cfg.Namespace),
		events: executors.NewEventQueue(),
		told:   map[string]podNews{}, stopping: map[string]bool{}, stopped: map[string]time.Time{}, seen: map[string]bool{},
	}
	// One list proves the API server, the credentials and the namespace.
	if _, err := client.BatchV1().Jobs(cfg.Namespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		e.events.Close()
		return nil, fmt.Errorf("kubernetes executor %s: listing Jobs in namespace %s: %w", cfg.Name, cfg.Namespace, err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.Set{LabelManagedBy: managedBy, LabelInstance: opts.Instance}.String()
		}))
	e.informer = factory.Core().V1().Pods().Informer()
	if _, err := e.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.podChanged(obj) },
		UpdateFunc: func(_, obj any) { e.podChanged(obj) },
		DeleteFunc: e.podDeleted,
	}); err != nil {
		e.events.Close()
		return nil, fmt.Errorf("kubernetes executor %s: %w", cfg.Name, err)
	}
	e.stopInf = make(chan struct{})
	go e.informer.Run(e.stopInf)
	if !cache.WaitForCacheSync(ctx.Done(), e.informer.HasSynced) {
		close(e.stopInf)
		e.events.Close()
		return nil, fmt.Errorf("kubernetes executor %s: following pods in namespace %s did not start: %w", cfg.Name, cfg.Namespace, ctx.Err())
	}
	e.log.Info("kubernetes executor ready", "image", cfg.Image, "engine", cfg.Engine, "instance", opts.Instance)
	return e, nil
}

// Name is the executor's configured name.
func (e *Executor) Name() string { return e.cfg.Name }

// Events reports what happens to the executor's workers.
func (e *Executor) Events() <-chan executors.Event { return e.events.Out() }

// Start creates the worker's Secret and Job. It returns once the API
// server stored them; the pod starts after.
func (e *Executor) Start(ctx context.Context, spec executors.WorkerSpec) (string, error) {
	if spec.RegistrationToken == "" || spec.ManagerAddr == "" {
		return "", fmt.Errorf("kubernetes executor: a worker needs a registration token and the manager's address")
	}
	if host, _, err := net.SplitHostPort(e.cfg.managerAddr(spec.ManagerAddr)); err != nil || unreachableFromPods(host) {
		return "", fmt.Errorf("kubernetes executor: pods cannot reach the build manager at %s: set the executor's BUILDMAN_HOSTNAME to an address they can, "+
			"and BUILD_MANAGER's WORKER_GRPC_LISTEN so that the manager listens there", spec.ManagerAddr)
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return "", errors.New("kubernetes executor: closed")
	}
	name, err := jobName(spec.BuildID)
	if err != nil {
		return "", err
	}
	objs := e.cfg.makeObjects(name, e.opts.Instance, spec, e.opts.WorkerEnv)
	log := e.log.With("build_id", spec.BuildID, "job", name)
	secrets := e.client.CoreV1().Secrets(e.cfg.Namespace)
	if _, err := secrets.Create(ctx, objs.secret, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("kubernetes executor: creating the worker's Secret: %w", err)
	}
	job, err := e.client.BatchV1().Jobs(e.cfg.Namespace).Create(ctx, objs.job, metav1.CreateOptions{})
	if err != nil {
		e.deleteSecret(context.WithoutCancel(ctx), name, log)
		return "", fmt.Errorf("kubernetes executor: creating the worker's Job: %w", err)
	}
	// The Job owns the Secret, so the garbage collector removes it with
	// the Job whoever deletes it (Stop, the TTL controller, an operator).
	owner := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":%q,"uid":%q,"controller":true,"blockOwnerDeletion":true}]}}`,
		job.Name, job.UID)
	if _, err := secrets.Patch(ctx, name, types.StrategicMergePatchType, []byte(owner), metav1.PatchOptions{}); err != nil {
		bg := context.WithoutCancel(ctx)
		e.deleteJob(bg, name, log)
		e.deleteSecret(bg, name, log)
		return "", fmt.Errorf("kubernetes executor: giving the worker's Secret to its Job: %w", err)
	}
	log.Info("worker Job created", "attempt", spec.Attempt, "image", e.cfg.Image)
	return name, nil
}

// unreachableFromPods is true for a host no pod can dial the manager at:
// none, loopback, or the unspecified address.
func unreachableFromPods(host string) bool {
	if host == "" || host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// jobName names a worker's Job (and its Secret) after its build, readable
// in kubectl, plus randomness: one build has several attempts.
func jobName(buildID string) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("kubernetes executor: job name: %w", err)
	}
	id := strings.ToLower(buildID)
	var clean strings.Builder
	for _, r := range id {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			clean.WriteRune(r)
		}
	}
	short := clean.String()
	if len(short) > 36 {
		short = short[:36]
	}
	return "berth-build-" + strings.Trim(short, "-") + "-" + hex.EncodeToString(b[:]), nil
}

// Stop deletes the worker's Job, its pods (foreground deletion) and so
// its Secret, and returns once the Job is gone or ctx ends.
func (e *Executor) Stop(ctx context.Context, executionID string) error {
	e.mu.Lock()
	if _, ok := e.stopped[executionID]; ok {
		e.mu.Unlock()
		return nil
	}
	e.stopping[executionID] = true
	e.mu.Unlock()
	log := e.log.With("job", executionID)
	jobs := e.client.BatchV1().Jobs(e.cfg.Namespace)
	job, err := jobs.Get(ctx, executionID, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		e.mu.Lock()
		delete(e.stopping, executionID)
		known := e.seen[executionID]
		if known {
			e.stopped[executionID] = time.Now()
		}
		e.mu.Unlock()
		if !known {
			return executors.ErrUnknownWorker
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("kubernetes executor: looking up Job %s: %w", executionID, err)
	}
	if job.Labels[LabelManagedBy] != managedBy {
		return executors.ErrUnknownWorker
	}
	if e.cfg.Debug {
		log.Info("DEBUG is set: the stopped worker's Job is kept")
		return e.markStopped(executionID)
	}
	if err := e.deleteAndWait(ctx, executionID); err != nil {
		return err
	}
	log.Info("worker Job deleted")
	return e.markStopped(executionID)
}

func (e *Executor) markStopped(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped[id] = time.Now()
	for old, at := range e.stopped {
		if time.Since(at) > 24*time.Hour {
			delete(e.stopped, old)
			delete(e.stopping, old)
		}
	}
	return nil
}

// deleteAndWait deletes Job name in the foreground (its pods first) and
// waits until the Job and its pods are gone.
func (e *Executor) deleteAndWait(ctx context.Context, name string) error {
	jobs := e.client.BatchV1().Jobs(e.cfg.Namespace)
	fg := metav1.DeletePropagationForeground
	err := jobs.Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes executor: deleting Job %s: %w", name, err)
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		_, err := jobs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && e.podsOf(name) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes executor: Job %s still being deleted: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// podsOf counts the pods of Job name the informer knows.
func (e *Executor) podsOf(name string) int {
	n := 0
	for _, obj := range e.informer.GetStore().List() {
		if p, ok := obj.(*corev1.Pod); ok && p.Labels["job-name"] == name {
			n++
		}
	}
	return n
}

func (e *Executor) deleteJob(ctx context.Context, name string, log *slog.Logger) {
	bg := metav1.DeletePropagationBackground
	if err := e.client.BatchV1().Jobs(e.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		log.Warn("deleting a Job failed", "err", err)
	}
}

func (e *Executor) deleteSecret(ctx context.Context, name string, log *slog.Logger) {
	if err := e.client.CoreV1().Secrets(e.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		log.Warn("deleting a worker's Secret failed", "err", err)
	}
}

// Running counts this instance's Jobs that have not finished, are not
// being deleted, and whose worker was not reported ended (the job
// controller marks a Job finished a moment after its pod).
func (e *Executor) Running(ctx context.Context) (int, error) {
	jobs, err := e.list(ctx)
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, j := range jobs {
		if j.DeletionTimestamp == nil && !finished(&j) && !e.told[j.Name].Ended {
			n++
		}
	}
	return n, nil
}

func (e *Executor) list(ctx context.Context) ([]batchv1.Job, error) {
	sel := labels.Set{LabelManagedBy: managedBy, LabelInstance: e.opts.Instance}.String()
	list, err := e.client.BatchV1().Jobs(e.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("kubernetes executor: listing Jobs: %w", err)
	}
	return list.Items, nil
}

func finished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// Workers lists this instance's live Jobs with their builds, for the
// build manager's reconciliation at start.
func (e *Executor) Workers(ctx context.Context) ([]executors.Worker, error) {
	jobs, err := e.list(ctx)
	if err != nil {
		return nil, err
	}
	var out []executors.Worker
	for _, j := range jobs {
		if j.DeletionTimestamp == nil && !finished(&j) {
			out = append(out, executors.Worker{ExecutionID: j.Name, BuildID: j.Labels[LabelBuild]})
		}
	}
	return out, nil
}

// podChanged reports what a pod's new state says, once per change.
func (e *Executor) podChanged(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	id := pod.Labels["job-name"]
	if id == "" {
		return
	}
	news := readPod(pod, e.cfg.Image)
	e.mu.Lock()
	e.seen[id] = true
	last, toldBefore := e.told[id]
	skip := e.stopping[id] || (toldBefore && (last == news || last.Ended)) || (news == podNews{})
	if !skip {
		e.told[id] = news
	}
	e.mu.Unlock()
	if skip {
		return
	}
	e.log.Info("worker pod news", "job", id, "pod", pod.Name, "reason", news.Reason, "ended", news.Ended)
	if news.Ended && failedWorker(pod) {
		// A worker that died before it could report says why only in its
		// own output; the informer's handler must not wait for it.
		go func() {
			reason := news.Reason
			if tail := e.logTail(pod.Name); tail != "" {
				reason += "; its output ends: " + tail
			}
			e.events.Push(executors.Event{ExecutionID: id, Ended: true, Reason: reason})
		}()
		return
	}
	e.events.Push(executors.Event{ExecutionID: id, Ended: news.Ended, Reason: news.Reason})
}

// failedWorker is true when the worker's container exited non-zero.
func failedWorker(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; cs.Name == containerName && t != nil && t.ExitCode != 0 && t.Reason != "OOMKilled" {
			return true
		}
	}
	return false
}

// logTailLines is how much of a failed worker's output reaches the build
// log.
const logTailLines = 5

// logTail is the end of a worker pod's output on one line ("" when it
// cannot be read).
func (e *Executor) logTail(pod string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lines := int64(logTailLines)
	raw, err := e.client.CoreV1().Pods(e.cfg.Namespace).GetLogs(pod, &corev1.PodLogOptions{Container: containerName, TailLines: &lines}).DoRaw(ctx)
	if err != nil {
		e.log.Warn("reading a failed worker's output failed", "pod", pod, "err", err)
		return ""
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(string(raw), "\n", " | ")), " ")
}

// podDeleted reports a pod that went away before its worker ended,
// saying who took it: the Job's deadline, or someone else.
func (e *Executor) podDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	id := pod.Labels["job-name"]
	e.mu.Lock()
	last := e.told[id]
	skip := id == "" || e.stopping[id] || last.Ended
	// The pod is gone for good: nothing more is told of it.
	delete(e.told, id)
	delete(e.seen, id)
	e.mu.Unlock()
	if skip {
		return
	}
	reason := "the worker's pod " + pod.Name + " was deleted by someone else"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	job, err := e.client.BatchV1().Jobs(e.cfg.Namespace).Get(ctx, id, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		reason = "the worker's Job " + id + " was deleted by someone else"
	case err == nil:
		for _, c := range job.Status.Conditions {
			if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue && c.Reason == batchv1.JobReasonDeadlineExceeded {
				reason = "the worker's Job ran past the build's deadline and was stopped"
			}
		}
	}
	if n := readPod(pod, e.cfg.Image); n.Ended && n.Reason != "" {
		reason = n.Reason
	}
	e.log.Info("worker pod gone", "job", id, "pod", pod.Name, "reason", reason)
	e.events.Push(executors.Event{ExecutionID: id, Ended: true, Reason: reason})
}

// Close stops following pods and closes Events. Jobs keep running: a
// restarted server supervises them again, or the build manager stops them.
func (e *Executor) Close(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	close(e.stopInf)
	e.events.Close()
	return nil
}
