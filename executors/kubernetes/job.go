package kubernetes

import (
	"maps"
	"net"
	"slices"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/buildmanager/workerpb"
	"github.com/berth-dev/berth/executors"
)

// Labels on every Job, pod and Secret the executor makes.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelBuild     = "berth.dev/build"
	LabelAttempt   = "berth.dev/attempt"
	LabelInstance  = "berth.dev/instance"
	managedBy      = "berth"
	// containerName is the worker's container in the pod.
	containerName = "worker"
	// Keys of the Secret that carries a worker's credentials.
	secretToken = "registration-token"
	secretCA    = "manager-ca.pem"
	// scratch is the pod's scratch volume: the worker's source, engine
	// state and image storage.
	scratchVolume = "scratch"
	scratchPath   = "/var/lib/berth-worker"
	// stopGrace is the pod's termination grace: the worker stops its
	// build and exits well within it.
	stopGrace = 10
)

// objects are what one worker needs: the Secret first, then the Job.
type objects struct {
	secret *corev1.Secret
	job    *batchv1.Job
}

// makeObjects describes the Secret and Job of a worker named name, for the
// executor's instance.
func (c *Config) makeObjects(name, instance string, spec executors.WorkerSpec, workerEnv map[string]string) objects {
	labels := map[string]string{
		LabelManagedBy: managedBy,
		LabelBuild:     spec.BuildID,
		LabelAttempt:   strconv.Itoa(spec.Attempt),
		LabelInstance:  instance,
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: labels},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{secretToken: []byte(spec.RegistrationToken)},
	}
	if spec.ManagerCAPEM != "" {
		secret.Data[secretCA] = []byte(spec.ManagerCAPEM)
	}

	env := []corev1.EnvVar{
		{Name: "BERTH_MANAGER_ADDR", Value: c.managerAddr(spec.ManagerAddr)},
		{Name: "BERTH_MANAGER_INSECURE", Value: strconv.FormatBool(spec.ManagerInsecure)},
		{Name: "BERTH_REGISTRATION_TOKEN", ValueFrom: secretRef(name, secretToken)},
		{Name: workerpb.EnginesEnv, Value: c.Engine},
		{Name: "BERTH_WORK_DIR", Value: scratchPath + "/work"},
		{Name: "BERTH_STORAGE_ROOT", Value: scratchPath + "/storage"},
		{Name: "HOME", Value: scratchPath + "/home"},
		// Without SYS_ADMIN, slirp4netns cannot confine itself to a mount
		// namespace of its own (containerSecurity).
		{Name: workerpb.SlirpInPlaceEnv, Value: "true"},
	}
	if spec.ManagerCAPEM != "" {
		env = append(env, corev1.EnvVar{Name: "BERTH_MANAGER_CA_PEM", ValueFrom: secretRef(name, secretCA)})
	}
	// The server's policy wins over the entry's own ENV.
	extra := maps.Clone(c.Env)
	maps.Copy(extra, workerEnv)
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		env = append(env, corev1.EnvVar{Name: k, Value: extra[k]})
	}

	no := false
	backoff := int32(0)
	grace := int64(stopGrace)
	uid := c.WorkerUID
	pod := corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		ServiceAccountName:            c.ServiceAccountName,
		AutomountServiceAccountToken:  &no,
		EnableServiceLinks:            &no,
		TerminationGracePeriodSeconds: &grace,
		// The worker resolves the server and the sources it fetches as
		// the node does; the cluster's DNS adds nothing a build needs.
		DNSPolicy:    corev1.DNSDefault,
		NodeSelector: c.NodeSelector,
		Tolerations:  c.Tolerations,
		SecurityContext: &corev1.PodSecurityContext{
			RunAsUser:  &uid,
			RunAsGroup: &uid,
			FSGroup:    &uid,
		},
		Containers: []corev1.Container{{
			Name:            containerName,
			Image:           c.Image,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Command:         []string{"berth", "worker"},
			Env:             env,
			Resources:       c.resources(),
			VolumeMounts:    []corev1.VolumeMount{{Name: scratchVolume, MountPath: scratchPath}},
			SecurityContext: c.containerSecurity(),
		}},
		Volumes: []corev1.Volume{{
			Name:         scratchVolume,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: c.VolumeSize}},
		}},
	}
	if c.UserNamespaces {
		pod.HostUsers = &no
	} else {
		yes := true
		pod.SecurityContext.RunAsNonRoot = &yes
	}
	if c.ImagePullSecretName != "" {
		pod.ImagePullSecrets = []corev1.LocalObjectReference{{Name: c.ImagePullSecretName}}
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			// berth's retry rule decides about another attempt, not the
			// job controller.
			BackoffLimit: &backoff,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       pod,
			},
		},
	}
	if spec.Lifetime > 0 {
		secs := int64(spec.Lifetime.Seconds())
		job.Spec.ActiveDeadlineSeconds = &secs
	}
	if !c.Debug {
		ttl := int32(c.Retention.Seconds())
		job.Spec.TTLSecondsAfterFinished = &ttl
	}
	return objects{secret: secret, job: job}
}

// containerSecurity is the worker container's security context. The
// worker builds inside a sandbox of its own (worker/sandbox): rootlesskit
// makes a user namespace nested in the pod's, with PID, mount and network
// namespaces, and the engine runs each RUN step in a further container
// under the engine's own seccomp profile. What that needs of the pod, and
// nothing more (docs/kubernetes.md has what fails without each):
//
//   - SETUID, SETGID: newuidmap and newgidmap write the nested namespace's
//     id maps, which span ids other than the worker's own.
//   - SETFCAP: the kernel asks for it of whoever maps uid 0 of a new user
//     namespace.
//   - allowPrivilegeEscalation: rootlesskit executes itself again as root
//     of the namespace it made, to take up its capabilities there;
//     no_new_privs would strip them at that exec. What it can take up in
//     the pod is bounded by the three above.
//   - procMount Unmasked: a RUN step's container mounts a fresh /proc,
//     and the kernel refuses that inside a user namespace while parts of
//     the pod's /proc are masked. The API server allows it only with user
//     namespaces.
//   - seccomp Unconfined: the runtime's default profile refuses clone
//     with namespace flags unless the container holds SYS_ADMIN, and
//     keyctl (the session keyring runc gives every RUN step) and
//     pivot_root whatever it holds. The RUN steps, the code a build
//     brings, stay filtered: the engine applies its default profile to
//     each, and slirp4netns applies its own filter to itself.
//
// Never privileged, and no SYS_ADMIN: the pod's root cannot mount, and
// slirp4netns, which would confine itself to a mount namespace of its own,
// stays in the pod's (workerpb.SlirpInPlaceEnv).
func (c *Config) containerSecurity() *corev1.SecurityContext {
	no, yes := false, true
	sc := &corev1.SecurityContext{
		Privileged:               &no,
		AllowPrivilegeEscalation: &yes,
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"SETUID", "SETGID", "SETFCAP"},
		},
	}
	if c.UserNamespaces {
		unmasked := corev1.UnmaskedProcMount
		sc.ProcMount = &unmasked
	}
	return sc
}

// resources are the worker container's requests and limits, with one of
// the node's tap devices for its sandbox's network.
func (c *Config) resources() corev1.ResourceRequirements {
	r := *c.Resources.DeepCopy()
	if r.Limits == nil {
		r.Limits = corev1.ResourceList{}
	}
	r.Limits[c.TunResource] = resource.MustParse("1")
	return r
}

func secretRef(name, key string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key,
	}}
}

// managerAddr is where pods dial the manager: BUILDMAN_HOSTNAME with its
// own port, or with the port of the address the manager gave.
func (c *Config) managerAddr(given string) string {
	if c.ManagerAddr == "" {
		return given
	}
	if _, _, err := net.SplitHostPort(c.ManagerAddr); err == nil {
		return c.ManagerAddr
	}
	_, port, err := net.SplitHostPort(given)
	if err != nil {
		return c.ManagerAddr
	}
	return net.JoinHostPort(c.ManagerAddr, port)
}
