package events

import (
	"sync"
	"testing"
	"time"
)

func TestPublishFiltersByKind(t *testing.T) {
	var b Bus
	all := b.Subscribe(4)
	builds := b.Subscribe(4, BuildSuccess, BuildFailure)
	b.Publish(Event{Kind: BuildQueued, Data: BuildData{BuildID: "1"}})
	b.Publish(Event{Kind: BuildSuccess, Data: BuildData{BuildID: "1"}})

	if e := <-all.C; e.Kind != BuildQueued || e.Time.IsZero() {
		t.Errorf("first event %+v", e)
	}
	if e := <-all.C; e.Kind != BuildSuccess {
		t.Errorf("second event %+v", e)
	}
	if e := <-builds.C; e.Kind != BuildSuccess || e.Data.(BuildData).BuildID != "1" {
		t.Errorf("filtered event %+v", e)
	}
	select {
	case e := <-builds.C:
		t.Errorf("unexpected event %+v", e)
	default:
	}
}

func TestPublishNeverBlocks(t *testing.T) {
	var b Bus
	slow := b.Subscribe(2)
	done := make(chan struct{})
	go func() {
		for range 10 {
			b.Publish(Event{Kind: BuildStart})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Publish blocked on a full subscriber")
	}
	if slow.Dropped() != 8 {
		t.Errorf("Dropped = %d, want 8", slow.Dropped())
	}
	if len(slow.C) != 2 {
		t.Errorf("buffered %d, want 2", len(slow.C))
	}
}

func TestUnsubscribeClosesAndStopsDelivery(t *testing.T) {
	var b Bus
	s := b.Subscribe(1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 1000 {
			b.Publish(Event{Kind: BuildStart})
		}
	}()
	s.Unsubscribe()
	s.Unsubscribe()
	wg.Wait()
	for range s.C {
	}
	b.Publish(Event{Kind: BuildStart}) // must not panic on the closed channel
}
