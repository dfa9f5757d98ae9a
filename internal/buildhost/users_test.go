package buildhost

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnsureSubIDRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subuid")
	// Existing ranges, one without a trailing newline: the new range goes
	// after the highest end, not into a gap.
	if err := os.WriteFile(path, []byte("alice:100000:65536\n# comment\nbob:300000:1000"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Ensure(path, "berth-worker", 999)
	if err != nil {
		t.Fatal(err)
	}
	if r.Start != 301000 || r.Count != Count || !r.Contains(301000+Count-1) || r.Contains(301000+Count) {
		t.Errorf("new range %+v, want 301000 + %d", r, Count)
	}
	again, err := Ensure(path, "berth-worker", 999)
	if err != nil || again != r {
		t.Errorf("second call = %+v, %v; want %+v (unchanged)", again, err, r)
	}
	data, _ := os.ReadFile(path)
	want := "alice:100000:65536\n# comment\nbob:300000:1000\nberth-worker:301000:65536\n"
	if string(data) != want {
		t.Errorf("file =\n%s\nwant\n%s", data, want)
	}
}

func TestEnsureSubIDRangeByUIDAndEmpty(t *testing.T) {
	dir := t.TempDir()
	byUID := filepath.Join(dir, "subgid")
	if err := os.WriteFile(byUID, []byte("999:500000:65536\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := Ensure(byUID, "berth-worker", 999); err != nil || r.Start != 500000 {
		t.Errorf("range listed by uid: %+v, %v; want 500000", r, err)
	}
	if data, _ := os.ReadFile(byUID); strings.Count(string(data), "\n") != 1 {
		t.Errorf("a range was added although the uid had one: %q", data)
	}
	missing := filepath.Join(dir, "absent")
	if r, err := Ensure(missing, "w", 5); err != nil || r.Start != Floor {
		t.Errorf("first range in a new file: %+v, %v; want %d", r, err, Floor)
	}
}
