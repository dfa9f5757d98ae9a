package registry

import (
	"sync"
	"time"
)

// DefaultMaxUploadsPerAccount is how many requests carrying blob bytes one
// account may have in flight on one server: several times what a client
// pushes in parallel (podman and skopeo use up to 6 streams, docker 5).
const DefaultMaxUploadsPerAccount = 16

// uploadSlots counts, per account, the requests streaming blob bytes into
// this server, so that one account (or one stolen credential) cannot hold
// every connection and goroutine with slow uploads. The count is per
// process; servers behind a load balancer each apply it.
type uploadSlots struct {
	max int // <= 0: no limit
	mu  sync.Mutex
	n   map[string]int
}

func newUploadSlots(max int) *uploadSlots {
	return &uploadSlots{max: max, n: map[string]int{}}
}

// acquire takes a slot for account, or reports that it has none left. The
// returned function gives the slot back.
func (s *uploadSlots) acquire(account string) (release func(), ok bool) {
	if s.max <= 0 {
		return func() {}, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[account] >= s.max {
		return nil, false
	}
	s.n[account]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n[account]--; s.n[account] == 0 {
			delete(s.n, account)
		}
	}, true
}

// takeUploadSlot takes a slot for account, answering 429
// TOOMANYREQUESTS (with Retry-After) when it has none left.
func (h *Handler) takeUploadSlot(account string) (func(), *Error) {
	release, ok := h.uploadSlots.acquire(account)
	if !ok {
		e := newError(CodeTooManyRequests,
			"too many uploads in progress for this account (at most %d at once)", h.uploadSlots.max)
		e.retryAfter = time.Second
		return nil, e
	}
	return release, nil
}
