package kubernetes

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors/kubernetes/tundevice"
)

// Defaults for keys left out of the EXECUTORS entry.
const (
	DefaultNamespace          = "builder"
	DefaultServiceAccountName = "berth-builder"
	DefaultWorkerImage        = "berth-worker"
	DefaultWorkerTag          = "latest"
	DefaultRetention          = 120 * time.Second
	// DefaultWorkerUID is the uid the worker runs as inside the pod. With
	// user namespaces (the default) the pod's uid 0 is an unprivileged
	// host uid, and the worker needs to be root of its own namespace to
	// map the ranges its build sandbox nests; without them it is refused.
	DefaultWorkerUID = 0
)

// Config is one EXECUTORS entry whose EXECUTOR is "kubernetes" (or Quay's
// "kubernetesPodman"). Every key but WORKER_IMAGE has a default.
type Config struct {
	Name string
	// API is how to reach the API server.
	API APIConfig
	// Namespace is BUILDER_NAMESPACE: where Jobs, pods and Secrets go.
	Namespace string
	// ServiceAccountName is SERVICE_ACCOUNT_NAME, the pods' account. The
	// pods get no token of it (automountServiceAccountToken: false).
	ServiceAccountName string
	// ImagePullSecretName is IMAGE_PULL_SECRET_NAME (none when empty).
	ImagePullSecretName string
	// Image is WORKER_IMAGE:WORKER_TAG.
	Image string
	// Resources from CONTAINER_{MEMORY,CPU}_{REQUEST,LIMITS}.
	Resources corev1.ResourceRequirements
	// VolumeSize is VOLUME_SIZE: the size limit of the pod's scratch
	// volume, which holds the source and the image storage.
	VolumeSize *resource.Quantity
	// NodeSelector from NODE_SELECTOR_LABEL_KEY/VALUE.
	NodeSelector map[string]string
	// Tolerations is TOLERATIONS, a list of Kubernetes tolerations.
	Tolerations []corev1.Toleration
	// Retention is RETENTION_AFTER_FINISHED: how long a finished Job
	// stays (ttlSecondsAfterFinished). Debug keeps Jobs: no TTL, and Stop
	// leaves them.
	Retention time.Duration
	Debug     bool
	// ManagerAddr is BUILDMAN_HOSTNAME: the build manager's gRPC address
	// as pods reach it (host:port, or a host that keeps the manager's
	// port). Empty: the address the manager gives.
	ManagerAddr string
	// Engine is ENGINE: the build engine the worker makes (buildah when
	// absent, as for every executor).
	Engine string
	// UserNamespaces is USER_NAMESPACES (default true): pods get
	// hostUsers: false.
	UserNamespaces bool
	// WorkerUID is WORKER_UID, the uid inside the pod.
	WorkerUID int64
	// TunResource is TUN_DEVICE_RESOURCE: the extended resource through
	// which a worker pod gets the node's /dev/net/tun for its build
	// sandbox's network (the resource `berth tun-device-plugin`
	// advertises, tundevice.ResourceName by default).
	TunResource corev1.ResourceName
	// Env is ENV plus HTTP_PROXY/HTTPS_PROXY/NO_PROXY: extra worker
	// environment.
	Env map[string]string
}

// APIConfig is how the executor reaches the API server: K8S_API_SERVER
// with K8S_API_TLS_CA and SERVICE_ACCOUNT_TOKEN (or K8S_API_TLS_CERT and
// K8S_API_TLS_KEY); else the pod's in-cluster account when berth runs in
// a cluster; else KUBECONFIG.
type APIConfig struct {
	Server     string
	CAFile     string
	Token      string
	CertFile   string
	KeyFile    string
	Kubeconfig string
}

// vmKeys are Quay's keys of its legacy kubernetes executor, which boots a
// virtual machine in a privileged pod.
var vmKeys = []string{"BUILDER_VM_CONTAINER_IMAGE", "VM_MEMORY_LIMIT"}

// ConfigFromMap reads an EXECUTORS entry. Scheduling keys (SETUP_TIME,
// MINIMUM_RETRY_THRESHOLD) belong to the build manager and are ignored.
func ConfigFromMap(m map[string]any) (Config, error) {
	c := Config{
		Namespace: DefaultNamespace, ServiceAccountName: DefaultServiceAccountName,
		Retention: DefaultRetention, UserNamespaces: true,
		WorkerUID: DefaultWorkerUID, Env: map[string]string{},
	}
	for _, k := range vmKeys {
		if _, ok := m[k]; ok {
			return Config{}, fmt.Errorf("kubernetes executor config: %s asks for Quay's virtual machine in a privileged pod, which berth does not offer: "+
				"berth's pods build unprivileged, with user namespaces; remove %s", k, k)
		}
	}
	r := reader{m: m}
	c.Name = r.str("NAME")
	c.API = APIConfig{
		Server: r.str("K8S_API_SERVER"), CAFile: r.str("K8S_API_TLS_CA"), Token: r.str("SERVICE_ACCOUNT_TOKEN"),
		CertFile: r.str("K8S_API_TLS_CERT"), KeyFile: r.str("K8S_API_TLS_KEY"), Kubeconfig: r.str("KUBECONFIG"),
	}
	r.setStr("BUILDER_NAMESPACE", &c.Namespace)
	r.setStr("SERVICE_ACCOUNT_NAME", &c.ServiceAccountName)
	c.ImagePullSecretName = r.str("IMAGE_PULL_SECRET_NAME")
	image := r.str("WORKER_IMAGE")
	if image == "" {
		// Quay's kubernetesPodman calls it so.
		image = r.str("BUILDER_CONTAINER_IMAGE")
	}
	tag := r.str("WORKER_TAG")
	switch {
	case image == "":
		image = DefaultWorkerImage + ":" + DefaultWorkerTag
		if tag != "" {
			image = DefaultWorkerImage + ":" + tag
		}
	case tag != "":
		image += ":" + tag
	case !strings.Contains(image[strings.LastIndex(image, "/")+1:], ":") && !strings.Contains(image, "@"):
		image += ":" + DefaultWorkerTag
	}
	c.Image = image
	c.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	r.quantity("CONTAINER_MEMORY_REQUEST", c.Resources.Requests, corev1.ResourceMemory)
	r.quantity("CONTAINER_CPU_REQUEST", c.Resources.Requests, corev1.ResourceCPU)
	r.quantity("CONTAINER_MEMORY_LIMITS", c.Resources.Limits, corev1.ResourceMemory)
	r.quantity("CONTAINER_CPU_LIMITS", c.Resources.Limits, corev1.ResourceCPU)
	if v := r.str("VOLUME_SIZE"); v != "" {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			r.fail("VOLUME_SIZE must be a size such as 32G: %v", err)
		}
		c.VolumeSize = &q
	}
	if k := r.str("NODE_SELECTOR_LABEL_KEY"); k != "" {
		c.NodeSelector = map[string]string{k: r.str("NODE_SELECTOR_LABEL_VALUE")}
	}
	c.Tolerations = r.tolerations("TOLERATIONS")
	if s, ok := r.seconds("RETENTION_AFTER_FINISHED"); ok {
		c.Retention = s
	}
	c.Debug = r.boolean("DEBUG", false)
	c.ManagerAddr = r.str("BUILDMAN_HOSTNAME")
	// The build manager reads the same key to tell the worker which engine
	// to use: one parser, one default.
	engine, err := workerpb.ParseEngine(m)
	if err != nil {
		r.fail("%v", err)
	}
	c.Engine = engine
	c.UserNamespaces = r.boolean("USER_NAMESPACES", true)
	c.TunResource = corev1.ResourceName(tundevice.ResourceName)
	if v := r.str("TUN_DEVICE_RESOURCE"); v != "" {
		c.TunResource = corev1.ResourceName(v)
	}
	if v, ok := m["WORKER_UID"]; ok {
		n, isInt := v.(int)
		if !isInt || n < 0 {
			r.fail("WORKER_UID must be a whole number >= 0, got %v", v)
		}
		c.WorkerUID = int64(n)
	}
	if c.WorkerUID == 0 && !c.UserNamespaces {
		r.fail("with USER_NAMESPACES off the worker would run as the node's root: set WORKER_UID to the image's unprivileged user (1000)")
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		if v := r.str(k); v != "" {
			c.Env[k] = v
		}
	}
	if v, ok := m["ENV"]; ok {
		env, isMap := v.(map[string]any)
		if !isMap {
			r.fail("ENV must be a map, not %T", v)
		}
		for k, val := range env {
			c.Env[k] = fmt.Sprint(val)
		}
	}
	if r.err != nil {
		return Config{}, r.err
	}
	return c, nil
}

// RESTConfig is the client configuration the API settings describe.
func (a APIConfig) RESTConfig() (*rest.Config, error) {
	switch {
	case a.Server != "":
		if a.Token == "" && a.CertFile == "" {
			return nil, fmt.Errorf("kubernetes executor config: K8S_API_SERVER needs SERVICE_ACCOUNT_TOKEN or K8S_API_TLS_CERT and K8S_API_TLS_KEY")
		}
		if (a.CertFile == "") != (a.KeyFile == "") {
			return nil, fmt.Errorf("kubernetes executor config: K8S_API_TLS_CERT and K8S_API_TLS_KEY go together")
		}
		host := a.Server
		if !strings.Contains(host, "://") {
			host = "https://" + host
		}
		return &rest.Config{
			Host:            host,
			BearerToken:     a.Token,
			TLSClientConfig: rest.TLSClientConfig{CAFile: a.CAFile, CertFile: a.CertFile, KeyFile: a.KeyFile},
		}, nil
	case a.Kubeconfig != "":
		return clientcmd.BuildConfigFromFlags("", a.Kubeconfig)
	}
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	if path := os.Getenv("KUBECONFIG"); path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	return nil, fmt.Errorf("kubernetes executor config: no API server: set K8S_API_SERVER (with K8S_API_TLS_CA and SERVICE_ACCOUNT_TOKEN), run berth in the cluster, or set KUBECONFIG")
}

// reader reads typed keys, keeping the first error.
type reader struct {
	m   map[string]any
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("kubernetes executor config: "+format, args...)
	}
}

func (r *reader) str(key string) string {
	v, ok := r.m[key]
	if !ok || v == nil {
		return ""
	}
	s, isStr := v.(string)
	if !isStr {
		r.fail("%s must be a string, not %T", key, v)
	}
	return s
}

func (r *reader) setStr(key string, dst *string) {
	if s := r.str(key); s != "" {
		*dst = s
	}
}

func (r *reader) boolean(key string, def bool) bool {
	v, ok := r.m[key]
	if !ok || v == nil {
		return def
	}
	switch b := v.(type) {
	case bool:
		return b
	case string:
		if p, err := strconv.ParseBool(b); err == nil {
			return p
		}
	}
	r.fail("%s must be true or false, not %v", key, v)
	return def
}

func (r *reader) seconds(key string) (time.Duration, bool) {
	v, ok := r.m[key]
	if !ok || v == nil {
		return 0, false
	}
	n, isInt := v.(int)
	if !isInt || n < 0 {
		r.fail("%s must be a whole number of seconds >= 0, got %v", key, v)
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

func (r *reader) quantity(key string, list corev1.ResourceList, name corev1.ResourceName) {
	v, ok := r.m[key]
	if !ok || v == nil {
		return
	}
	q, err := resource.ParseQuantity(fmt.Sprint(v))
	if err != nil {
		r.fail("%s must be a Kubernetes quantity such as 4Gi or 500m: %v", key, err)
		return
	}
	list[name] = q
}

func (r *reader) tolerations(key string) []corev1.Toleration {
	v, ok := r.m[key]
	if !ok || v == nil {
		return nil
	}
	list, isList := v.([]any)
	if !isList {
		r.fail("%s must be a list of tolerations", key)
		return nil
	}
	var out []corev1.Toleration
	for i, e := range list {
		em, isMap := e.(map[string]any)
		if !isMap {
			r.fail("%s[%d] must be a map (key, operator, value, effect)", key, i)
			return nil
		}
		t := corev1.Toleration{}
		sub := reader{m: em}
		t.Key = sub.str("key")
		t.Operator = corev1.TolerationOperator(sub.str("operator"))
		t.Value = sub.str("value")
		t.Effect = corev1.TaintEffect(sub.str("effect"))
		if s, ok := sub.seconds("tolerationSeconds"); ok {
			secs := int64(s / time.Second)
			t.TolerationSeconds = &secs
		}
		if sub.err != nil {
			r.fail("%s[%d]: %v", key, i, sub.err)
			return nil
		}
		switch t.Operator {
		case "", corev1.TolerationOpEqual, corev1.TolerationOpExists:
		default:
			r.fail("%s[%d]: operator must be Equal or Exists, not %q", key, i, t.Operator)
			return nil
		}
		out = append(out, t)
	}
	return out
}
