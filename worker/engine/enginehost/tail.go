package enginehost

import (
	"strings"
	"sync"
)

// TailLines is how much of a program's output a Tail keeps to explain a
// failure.
const TailLines = 20

// Tail keeps the last TailLines lines of a program's output. It is safe
// for concurrent use (a program's stdout and stderr are read at once).
type Tail struct {
	mu    sync.Mutex
	lines []string
}

// Add keeps l, forgetting the oldest line beyond TailLines.
func (t *Tail) Add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > TailLines {
		t.lines = t.lines[len(t.lines)-TailLines:]
	}
}

// Lines returns a copy of the lines kept, oldest first.
func (t *Tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

// String returns the lines kept, joined by newlines.
func (t *Tail) String() string {
	return strings.Join(t.Lines(), "\n")
}
