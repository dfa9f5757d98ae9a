package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBusyboxImageRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name  string
		creds Creds
	}{{"anonymous", Creds{}}, {"htpasswd", Creds{Username: "tester", Password: "s3cret"}}} {
		t.Run(c.name, func(t *testing.T) {
			var reg *Registry
			if c.creds.Username != "" {
				reg = StartDistributionAuth(t, c.creds)
			} else {
				reg = StartDistribution(t)
			}
			ref := BusyboxImage(t, reg.Host, "lib/busybox", c.creds)
			rootfs := ExtractImage(t, ref, c.creds)
			fi, err := os.Lstat(filepath.Join(rootfs, "bin", "busybox"))
			if err != nil || fi.Size() < 100_000 {
				t.Fatalf("busybox in the pulled image: %v, %v", fi, err)
			}
			if target, err := os.Readlink(filepath.Join(rootfs, "bin", "sh")); err != nil || target != "busybox" {
				t.Fatalf("/bin/sh -> %q, %v", target, err)
			}
		})
	}
}
