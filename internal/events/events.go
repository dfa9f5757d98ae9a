// Package events is berth's in-process event bus. Producers (the build
// manager, later the registry and the API) publish typed events; consumers
// (notifications, audit) subscribe to the kinds they care about.
//
// Publish never blocks the producer: each subscriber has a bounded buffer,
// and an event that does not fit is dropped for that subscriber and counted
// (Dropped), so a slow consumer cannot stall a build. Consumers needing
// every event must keep up or size their buffer accordingly.
package events

import (
	"sync"
	"sync/atomic"
	"time"
)

// Kind names an event, with Quay's notification event names.
type Kind string

const (
	BuildQueued    Kind = "build_queued"
	BuildStart     Kind = "build_start"
	BuildSuccess   Kind = "build_success"
	BuildFailure   Kind = "build_failure"
	BuildCancelled Kind = "build_cancelled"
)

// Event is one occurrence. Data is the payload as Quay's notifications
// carry it (for builds: BuildData).
type Event struct {
	Kind Kind
	// Namespace and Repository locate the event ("" when not about one).
	Namespace  string
	Repository string
	Time       time.Time
	Data       any
}

// BuildData is the payload of build events, with Quay's field names.
type BuildData struct {
	BuildID         string            `json:"build_id"`
	BuildName       string            `json:"build_name"`
	DockerTags      []string          `json:"docker_tags"`
	TriggerID       string            `json:"trigger_id,omitempty"`
	TriggerKind     string            `json:"trigger_kind,omitempty"`
	TriggerMetadata any               `json:"trigger_metadata,omitempty"`
	ManifestDigests map[string]string `json:"manifest_digests,omitempty"`
	ErrorMessage    string            `json:"error_message,omitempty"`
	// Phase is the phase the build entered (berth addition).
	Phase string `json:"phase"`
}

// Bus fans events out to subscribers. The zero value is ready to use.
type Bus struct {
	mu   sync.RWMutex
	subs map[*Subscription]struct{}
}

// Subscription receives events on C until Unsubscribe.
type Subscription struct {
	// C delivers the events; it is closed by Unsubscribe.
	C     <-chan Event
	c     chan Event
	kinds map[Kind]bool
	bus   *Bus
	drops atomic.Int64
	once  sync.Once
}

// Subscribe returns a subscription with room for buffer pending events
// (at least 1), receiving only the given kinds (none: every kind).
func (b *Bus) Subscribe(buffer int, kinds ...Kind) *Subscription {
	c := make(chan Event, max(buffer, 1))
	s := &Subscription{C: c, c: c, bus: b}
	if len(kinds) > 0 {
		s.kinds = make(map[Kind]bool, len(kinds))
		for _, k := range kinds {
			s.kinds[k] = true
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	return s
}

// Unsubscribe stops delivery and closes C. It is idempotent.
func (s *Subscription) Unsubscribe() {
	s.once.Do(func() {
		s.bus.mu.Lock()
		delete(s.bus.subs, s)
		// Closing under the lock: Publish sends only while holding the
		// read lock, so no send can race the close.
		close(s.c)
		s.bus.mu.Unlock()
	})
}

// Dropped counts events this subscription missed because its buffer was full.
func (s *Subscription) Dropped() int64 { return s.drops.Load() }

// Publish delivers e to every subscriber wanting its kind without
// blocking; e.Time is set when zero.
func (b *Bus) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for s := range b.subs {
		if s.kinds != nil && !s.kinds[e.Kind] {
			continue
		}
		select {
		case s.c <- e:
		default:
			s.drops.Add(1)
		}
	}
}
