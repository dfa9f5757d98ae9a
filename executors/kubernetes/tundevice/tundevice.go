// Package tundevice is a Kubernetes device plugin that lends pods the
// node's /dev/net/tun.
//
// A build's sandbox reaches the outside world through slirp4netns, which
// needs a tap device. A pod with a user namespace of its own (hostUsers:
// false) cannot make one: mknod is refused in a user namespace, and a
// hostPath volume of the device fails because the kubelet idmaps every
// volume of such a pod and devtmpfs cannot be idmapped. Devices a device
// plugin allocates reach the container runtime as devices, not volumes: the
// runtime bind-mounts the node's device into the container and allows it in
// the device cgroup. /dev/net/tun is harmless to share: every open makes a
// new interface, in the network namespace of whoever opens it, and creating
// one needs CAP_NET_ADMIN there.
//
// The plugin advertises a fixed number of interchangeable devices under one
// resource name (ResourceName by default); a worker pod asks for one in its
// limits.
package tundevice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/berth-dev/berth/internal/buildhost"
)

// ResourceName is the extended resource a worker pod requests.
const ResourceName = "berth.dev/tun"

// Options configure the plugin.
type Options struct {
	// ResourceName is advertised to the kubelet (ResourceName when empty).
	ResourceName string
	// Count is how many pods of the node may hold the device at once.
	Count int
	// Dir is the kubelet's device plugin directory: its registration socket
	// is there, and the plugin's own socket is made there
	// (pluginapi.DevicePluginPath when empty).
	Dir string
	// Log receives what the plugin does.
	Log *slog.Logger
}

func (o *Options) defaults() error {
	if o.ResourceName == "" {
		o.ResourceName = ResourceName
	}
	if o.Dir == "" {
		o.Dir = pluginapi.DevicePluginPath
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Count < 1 {
		return fmt.Errorf("tundevice: count must be at least 1, not %d", o.Count)
	}
	// The runtime bind-mounts the node's device node, mode and all, and the
	// pod's user namespace sees its owner as nobody: only a node device
	// that everyone may open can be opened in the pod.
	if err := buildhost.OpenTunDevice(o.Log); err != nil {
		return fmt.Errorf("tundevice: %w", err)
	}
	return nil
}

// socketName is the plugin's socket in the device plugin directory.
const socketName = "berth-tun.sock"

// Serve runs the plugin until ctx ends: it serves the device plugin API on
// its socket and registers with the kubelet, again whenever the kubelet
// restarts (a restarting kubelet removes every plugin socket, which is how
// a plugin learns of it).
func Serve(ctx context.Context, o Options) error {
	if err := o.defaults(); err != nil {
		return err
	}
	socket := filepath.Join(o.Dir, socketName)
	for {
		err := serveOnce(ctx, o, socket)
		if ctx.Err() != nil {
			return nil
		}
		o.Log.Warn("tun device plugin: serving again", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// serveOnce serves on a fresh socket, registers, and returns when ctx ends
// or the socket disappears.
func serveOnce(ctx context.Context, o Options, socket string) error {
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the old socket: %w", err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, &plugin{opts: o, done: ctx.Done()})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer srv.Stop()

	if err := register(ctx, o); err != nil {
		return err
	}
	o.Log.Info("tun device plugin: registered", "resource", o.ResourceName, "count", o.Count, "socket", socket)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-tick.C:
			if _, err := os.Stat(socket); err != nil {
				return fmt.Errorf("the kubelet removed the socket (it restarted): %w", err)
			}
		}
	}
}

// register announces the plugin to the kubelet.
func register(ctx context.Context, o Options) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+filepath.Join(o.Dir, filepath.Base(pluginapi.KubeletSocket)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to the kubelet: %w", err)
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     socketName,
		ResourceName: o.ResourceName,
	})
	if err != nil {
		return fmt.Errorf("register with the kubelet: %w", err)
	}
	return nil
}

// plugin answers the kubelet.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	opts Options
	// done ends ListAndWatch's stream when the plugin stops.
	done <-chan struct{}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the devices once: their number and health never
// change while the plugin runs.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	devices := make([]*pluginapi.Device, p.opts.Count)
	for i := range devices {
		devices[i] = &pluginapi.Device{ID: "tun-" + strconv.Itoa(i), Health: pluginapi.Healthy}
	}
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-stream.Context().Done():
	}
	return nil
}

// Allocate gives each container that asked the node's tap device, however
// many of the devices it holds: they are all the same device.
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Devices: []*pluginapi.DeviceSpec{{
				ContainerPath: buildhost.TunDevice,
				HostPath:      buildhost.TunDevice,
				Permissions:   "rw",
			}},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
