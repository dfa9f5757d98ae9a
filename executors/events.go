package executors

import "sync"

// EventQueue delivers Events on an unbuffered channel from an unbounded
// queue, so a slow reader never blocks the executor that reports and no
// event is lost. The zero value is not usable: make one with NewEventQueue.
type EventQueue struct {
	out   chan Event
	mu    sync.Mutex
	queue []Event
	wake  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// NewEventQueue starts a queue; Close ends it.
func NewEventQueue() *EventQueue {
	q := &EventQueue{out: make(chan Event), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

// Out is the channel a Reporter's Events returns; it is closed by Close.
func (q *EventQueue) Out() <-chan Event { return q.out }

// Push queues ev; it never blocks.
func (q *EventQueue) Push(ev Event) {
	q.mu.Lock()
	q.queue = append(q.queue, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *EventQueue) run() {
	defer close(q.out)
	for {
		q.mu.Lock()
		var ev Event
		have := len(q.queue) > 0
		if have {
			ev, q.queue = q.queue[0], q.queue[1:]
		}
		q.mu.Unlock()
		if !have {
			select {
			case <-q.wake:
				continue
			case <-q.done:
				return
			}
		}
		select {
		case q.out <- ev:
		case <-q.done:
			return
		}
	}
}

// Close drops what is queued and closes Out.
func (q *EventQueue) Close() { q.once.Do(func() { close(q.done) }) }
