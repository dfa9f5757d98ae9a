package testenv

import (
	"net"
	"sync/atomic"
	"testing"
)

// CountingListener listens on a loopback port that accepts connections,
// counts them and closes them at once, for tests that prove a policy
// refused a destination before connecting (the count stays 0). It is
// closed when t ends.
func CountingListener(t testing.TB) (addr string, accepted *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted = &atomic.Int32{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return l.Addr().String(), accepted
}
