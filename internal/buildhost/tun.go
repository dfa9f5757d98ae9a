package buildhost

import (
	"fmt"
	"log/slog"
	"os"
)

// TunDevice is the device slirp4netns opens to give a sandbox its network.
const TunDevice = "/dev/net/tun"

// OpenTunDevice lets unprivileged users open TunDevice. Debian's udev makes
// it 0666; some machines (containers, minimal VMs) create it 0600. Opening
// it grants nothing by itself: configuring a device needs CAP_NET_ADMIN in
// the network namespace, which a build has only in its own. Only root can
// change the mode.
func OpenTunDevice(log *slog.Logger) error {
	fi, err := os.Stat(TunDevice)
	if err != nil {
		return fmt.Errorf("builds need %s for their network: %w", TunDevice, err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("%s is not a character device", TunDevice)
	}
	if fi.Mode().Perm()&0o006 == 0o006 {
		return nil
	}
	if err := os.Chmod(TunDevice, 0o666); err != nil {
		return fmt.Errorf("let build users open %s: %w", TunDevice, err)
	}
	log.Info("made the TUN device usable by build users (mode 0666, as udev sets it)", "device", TunDevice, "was", fi.Mode().Perm())
	return nil
}

// SandboxStateParent is where a build's sandbox keeps its state: rootlesskit
// puts unix sockets there, whose paths must stay under 108 bytes, and a
// build's own directory may be deeper than that. The local executor removes
// what a build user left in it.
const SandboxStateParent = "/tmp"
