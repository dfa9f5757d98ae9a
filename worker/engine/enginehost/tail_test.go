package enginehost

import (
	"strconv"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	var tail Tail
	for i := range TailLines + 5 {
		tail.Add("line " + strconv.Itoa(i))
	}
	lines := tail.Lines()
	if len(lines) != TailLines || lines[0] != "line 5" || lines[TailLines-1] != "line 24" {
		t.Errorf("lines = %q", lines)
	}
	if !strings.HasPrefix(tail.String(), "line 5\nline 6\n") || !strings.HasSuffix(tail.String(), "\nline 24") {
		t.Errorf("String = %q", tail.String())
	}
	lines[0] = "changed"
	if tail.Lines()[0] != "line 5" {
		t.Error("Lines shares the kept lines")
	}
}
