package kubernetes

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/test/harness"
)

const (
	// berthUser owns the worker image's repository (berth/worker).
	berthUser = "berth"
	// workerTag is the worker image's tag in the tests.
	workerTag = "k8s-e2e"
)

var (
	fixtureOnce sync.Once
	shared      *fixture
	fixtureErr  error
)

// berthServer is the berth the package's tests share: it serves the pod
// network's gateway, so that containerd pulls the worker image from it and
// pods push to it and reach its build manager.
type berthServer struct {
	*harness.Server
	tools *harness.Tools
	// executorToken is the executor's service-account token, for configs.
	executorToken string
	caFile        string
}

// setupFixture makes the package's shared fixture once: a namespace, the
// executor's service account bound to the shipped Role, and berth on the
// gateway holding the worker image it built itself.
func setupFixture(t *testing.T) *fixture {
	t.Helper()
	fixtureOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		shared, fixtureErr = newFixture(ctx, t)
	})
	if fixtureErr != nil {
		t.Fatalf("%v: %v", errNoFixture, fixtureErr)
	}
	return shared
}

func newFixture(ctx context.Context, t *testing.T) (fx *fixture, err error) {
	adminConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	admin := k8s.NewForConfigOrDie(adminConfig)
	ns, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "berth-builder-"}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	if err := waitDefaultAccount(ctx, admin, ns.Name); err != nil {
		return nil, err
	}
	executor, token, err := shippedExecutorAccount(ctx, admin, adminConfig, ns.Name)
	if err != nil {
		return nil, err
	}
	srv, err := startBerth(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		// TestMain stops only a fixture that came up.
		if err != nil {
			_ = srv.Stop()
			os.RemoveAll(srv.Opts.Dir)
		}
	}()
	srv.executorToken = token
	srv.caFile = adminConfig.TLSClientConfig.CAFile
	fmt.Fprintln(os.Stderr, "kubernetes: berth builds its worker image (make worker-image), a few minutes")
	start := time.Now()
	image := srv.Addr + "/" + berthUser + "/worker:" + workerTag
	make := exec.CommandContext(ctx, "make", "--no-print-directory", "worker-image", "WORKER_IMAGE="+image)
	root, err := harness.ModuleRoot()
	if err != nil {
		return nil, err
	}
	make.Dir = root
	// The gateway is no loopback address: plain HTTP is asked for.
	make.Env = append(srv.tools.Env, "TLS_VERIFY=false", "BERTH_SERVER=http://"+srv.Addr)
	if out, err := make.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("make worker-image: %v\n%s", err, tail(string(out), 40))
	}
	fmt.Fprintf(os.Stderr, "kubernetes: worker image built in %s\n", time.Since(start).Round(time.Second))
	// containerd pulls without credentials.
	c := harness.NewClient(srv.Server)
	if err := c.SetVisibility(ctx, berthUser+"/worker", "public"); err != nil {
		return nil, err
	}
	return &fixture{namespace: ns.Name, admin: admin, executor: executor, workerImage: image, berth: srv}, nil
}

// startBerth starts berth on the gateway port containerd trusts, with the
// local executor only (the worker image is built there first).
func startBerth(ctx context.Context) (*berthServer, error) {
	bin, err := harness.BerthBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "berth-k8s-server-")
	if err != nil {
		return nil, err
	}
	addr := registryListener.Addr().String()
	// The port was held since the cluster started; berth takes it now.
	registryListener.Close()
	srv, err := harness.StartServer(ctx, harness.ServerOptions{
		Bin: bin, Dir: dir, Addr: addr, User: berthUser,
		Config: "SERVER_HOSTNAME: " + addr + "\n" + harness.BuildManagerConfig(1, 20*time.Minute),
		// A build in a pod is stopped with the server; its Job goes too.
		StopTimeout: time.Minute,
	})
	if err != nil {
		return nil, err
	}
	tools, err := harness.NewTools(filepath.Join(dir, "tools"))
	if err != nil {
		return nil, err
	}
	if r := tools.Exec(ctx, srv.Opts.Password, "podman", "login", "--tls-verify=false", "-u", berthUser, "-p", srv.Opts.Password, addr); r.Err != nil {
		return nil, r.Err
	}
	return &berthServer{Server: srv, tools: tools}, nil
}

// shippedExecutorAccount applies deploy/kubernetes/rbac.yaml (the service
// account, Role and RoleBinding berth ships) in namespace and returns a
// client acting as that account, with a token the TokenRequest API issued.
func shippedExecutorAccount(ctx context.Context, admin k8s.Interface, adminConfig *rest.Config, namespace string) (k8s.Interface, string, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return nil, "", err
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "kubernetes", "rbac.yaml"))
	if err != nil {
		return nil, "", err
	}
	var account string
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, "", fmt.Errorf("rbac.yaml: %w", err)
		}
		switch meta.Kind {
		case "ServiceAccount":
			var sa corev1.ServiceAccount
			if err := yaml.Unmarshal([]byte(doc), &sa); err != nil {
				return nil, "", err
			}
			sa.Namespace, account = namespace, sa.Name
			_, err = admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &sa, metav1.CreateOptions{})
		case "Role":
			var role rbacv1.Role
			if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
				return nil, "", err
			}
			role.Namespace = namespace
			_, err = admin.RbacV1().Roles(namespace).Create(ctx, &role, metav1.CreateOptions{})
		case "RoleBinding":
			var rb rbacv1.RoleBinding
			if err := yaml.Unmarshal([]byte(doc), &rb); err != nil {
				return nil, "", err
			}
			rb.Namespace = namespace
			for i := range rb.Subjects {
				rb.Subjects[i].Namespace = namespace
			}
			_, err = admin.RbacV1().RoleBindings(namespace).Create(ctx, &rb, metav1.CreateOptions{})
		default:
			return nil, "", fmt.Errorf("rbac.yaml: unexpected kind %q", meta.Kind)
		}
		if err != nil {
			return nil, "", fmt.Errorf("apply %s from rbac.yaml: %w", meta.Kind, err)
		}
	}
	ttl := int64(3 * 3600)
	tr, err := admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, account,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("request a token for %s: %w", account, err)
	}
	config := rest.AnonymousClientConfig(adminConfig)
	config.BearerToken = tr.Status.Token
	client, err := k8s.NewForConfig(config)
	if err != nil {
		return nil, "", err
	}
	return client, tr.Status.Token, nil
}

func waitDefaultAccount(ctx context.Context, admin k8s.Interface, ns string) error {
	for {
		_, err := admin.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the default service account of %s: %w", ns, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
