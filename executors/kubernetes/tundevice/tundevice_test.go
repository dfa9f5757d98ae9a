package tundevice

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/berth-dev/berth/internal/buildhost"
)

// registrations is the kubelet's registration service as a plugin sees it:
// it records each request. The real kubelet's side is exercised by
// test/kubernetes, whose build pods get the device through it.
type registrations struct {
	pluginapi.UnimplementedRegistrationServer
	got chan *pluginapi.RegisterRequest
}

func (r *registrations) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	r.got <- req
	return &pluginapi.Empty{}, nil
}

func listenKubelet(t *testing.T, dir string) *registrations {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	r := &registrations{got: make(chan *pluginapi.RegisterRequest, 4)}
	pluginapi.RegisterRegistrationServer(srv, r)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return r
}

func awaitRegistration(t *testing.T, r *registrations) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case req := <-r.got:
		return req
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin did not register")
		return nil
	}
}

// The plugin registers its resource, lists the devices it was told to,
// gives every container that asks the node's /dev/net/tun, and registers
// again when a restarting kubelet removes its socket.
func TestServe(t *testing.T) {
	if _, err := os.Stat(buildhost.TunDevice); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and a tap device")
	}
	dir := t.TempDir()
	kubelet := listenKubelet(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, Options{Count: 3, Dir: dir}) }()

	req := awaitRegistration(t, kubelet)
	if req.ResourceName != ResourceName || req.Version != pluginapi.Version || req.Endpoint != socketName {
		t.Fatalf("registration %+v", req)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, socketName), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	plugin := pluginapi.NewDevicePluginClient(conn)
	stream, err := plugin.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Devices) != 3 || list.Devices[2].Health != pluginapi.Healthy {
		t.Fatalf("devices %v", list.Devices)
	}
	resp, err := plugin.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"tun-0"}}, {DevicesIds: []string{"tun-1", "tun-2"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 2 {
		t.Fatalf("%d container responses for 2 containers", len(resp.ContainerResponses))
	}
	for _, cr := range resp.ContainerResponses {
		if len(cr.Devices) != 1 || cr.Devices[0].HostPath != "/dev/net/tun" || cr.Devices[0].ContainerPath != "/dev/net/tun" || cr.Devices[0].Permissions != "rw" {
			t.Errorf("allocation %+v", cr.Devices)
		}
	}
	if st, err := os.Stat(buildhost.TunDevice); err != nil || st.Mode().Perm()&0o006 != 0o006 {
		t.Errorf("the node's tap device is not openable by everyone: %v %v", st.Mode(), err)
	}

	// A restarting kubelet removes the plugin sockets.
	if err := os.Remove(filepath.Join(dir, socketName)); err != nil {
		t.Fatal(err)
	}
	awaitRegistration(t, kubelet)

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestServeRefusesNoDevices(t *testing.T) {
	if err := Serve(context.Background(), Options{Count: 0, Dir: t.TempDir()}); err == nil {
		t.Fatal("a plugin with no device to offer started")
	}
}
