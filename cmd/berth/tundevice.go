package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/berth-dev/berth/executors/kubernetes/tundevice"
)

// runTunDevicePlugin is `berth tun-device-plugin`: the device plugin that
// lends /dev/net/tun to the Kubernetes executor's worker pods, run on every
// build node (deploy/kubernetes/tun-device-plugin.yaml).
func runTunDevicePlugin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tun-device-plugin", flag.ContinueOnError)
	count := fs.Int("count", 64, "how many pods of this node may hold the device at once")
	dir := fs.String("dir", "", "the kubelet's device plugin directory (default /var/lib/kubelet/device-plugins/)")
	resource := fs.String("resource", tundevice.ResourceName, "the extended resource name pods request")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := newLogger(*level)
	if err != nil {
		return err
	}
	return tundevice.Serve(ctx, tundevice.Options{ResourceName: *resource, Count: *count, Dir: *dir, Log: log})
}
