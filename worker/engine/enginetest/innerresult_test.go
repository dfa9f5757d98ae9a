package enginetest

import "testing"

// TestInnerResult: the unprivileged run's verdict reads each inner test's
// own result line, and what it logged, from `go test -v` output, whether
// the log was streamed above the result line or printed below it.
func TestInnerResult(t *testing.T) {
	out := `=== RUN   TestEngineSuite
=== PAUSE TestEngineSuite
=== RUN   TestSandboxNetwork
    network_test.go:44: distribution's registry is not at .tools/bin/registry
--- SKIP: TestSandboxNetwork (0.00s)
=== CONT  TestEngineSuite
    enginetest.go:82: distribution's registry is not at .tools/bin/registry
--- SKIP: TestEngineSuite (0.00s)
=== RUN   TestOther
--- PASS: TestOther (1.20s)
--- FAIL: TestBuffered (0.10s)
    buffered_test.go:9: printed after the result
        on two lines
PASS
`
	for _, c := range []struct{ name, result, reason string }{
		{"TestEngineSuite", "SKIP", "enginetest.go:82: distribution's registry is not at .tools/bin/registry"},
		{"TestSandboxNetwork", "SKIP", "network_test.go:44: distribution's registry is not at .tools/bin/registry"},
		{"TestOther", "PASS", ""},
		{"TestBuffered", "FAIL", "buffered_test.go:9: printed after the result on two lines"},
		{"TestMissing", "", ""},
		{"TestEngine", "", ""},
	} {
		result, reason := innerResult(out, c.name)
		if result != c.result || reason != c.reason {
			t.Errorf("innerResult(%s) = %q, %q; want %q, %q", c.name, result, reason, c.result, c.reason)
		}
	}
}
