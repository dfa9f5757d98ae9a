package e2e

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// conformanceTimeout bounds the whole OCI suite (about a minute locally).
const conformanceTimeout = 10 * time.Minute

// TestConformance runs the OCI distribution-spec conformance suite (the
// config-driven 1.1 program built by scripts/install-deps.sh) against the
// shared server, with every optional API berth implements switched on, and
// fails listing each failing test.
func TestConformance(t *testing.T) {
	s := requireServer(t)
	bin, err := harness.LookTool("conformance")
	if err != nil {
		t.Fatal(err)
	}

	resultsDir := os.Getenv("BERTH_E2E_RESULTS_DIR")
	if resultsDir == "" {
		// Kept after the run on purpose: report.html is the first thing to
		// open when this test fails.
		resultsDir, err = os.MkdirTemp("", "berth-conformance-")
		if err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(resultsDir, 0o755); err != nil {
		t.Fatal(err)
	}

	env := []string{
		"OCI_VERSION=1.1",
		"OCI_REGISTRY=" + s.Addr,
		"OCI_TLS=disabled",
		"OCI_REPO1=" + repo("conformance"),
		"OCI_REPO2=" + repo("crossmount"),
		"OCI_USERNAME=" + tgt.user,
		"OCI_PASSWORD=" + tgt.password,
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_RESULTS_DIR=" + resultsDir,
		"OCI_LOG=warn",
	}
	// The suite reads any OCI_* variable (and a legacy set that maps onto
	// them); none may leak in from the caller's environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			env = append(env, kv)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), conformanceTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	// The suite also loads ./oci-conformance.yaml when present; an empty
	// working directory makes sure it is configured by env alone.
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("conformance suite ran in %s; results in %s (report.html, junit.xml, results.yaml)",
		time.Since(start).Round(time.Second), resultsDir)
	if err := os.WriteFile(filepath.Join(resultsDir, "output.txt"), out.Bytes(), 0o644); err != nil {
		t.Errorf("saving the suite's output: %v", err)
	}

	// The program exits 0 when it cannot even load its config, so the
	// results file, not the exit status, is the verdict.
	junitPath := filepath.Join(resultsDir, "junit.xml")
	data, err := os.ReadFile(junitPath)
	if err != nil {
		t.Fatalf("no junit.xml from the suite (exit: %v): %v\noutput:\n%s", runErr, err, tail(out.String(), 60))
	}
	sum, err := summarizeJUnit(data)
	if err != nil {
		t.Fatalf("parsing %s: %v", junitPath, err)
	}
	t.Logf("OCI conformance: %d passed, %d failed, %d errors, %d skipped, %d disabled of %d checks; %d test cases: %d passed, %d failed, %d skipped",
		sum.passed, sum.failed, sum.errors, sum.skipped, sum.disabled, sum.total,
		sum.cases, sum.casesPassed, len(sum.failures), sum.casesSkipped)
	if sum.total == 0 || sum.passed == 0 {
		t.Fatalf("the suite ran no test (exit: %v)\noutput:\n%s", runErr, tail(out.String(), 60))
	}
	if sum.failed != 0 || sum.errors != 0 {
		var b strings.Builder
		for _, f := range sum.failures {
			fmt.Fprintf(&b, "  %s [%s]\n", f.name, f.status)
			if f.detail != "" {
				fmt.Fprintf(&b, "      %s\n", strings.ReplaceAll(tail(f.detail, 3), "\n", "\n      "))
			}
		}
		t.Fatalf("%d conformance checks failed and %d errored, in %d test cases (details in %s/report.html):\n%s",
			sum.failed, sum.errors, len(sum.failures), resultsDir, b.String())
	}
	if runErr != nil {
		t.Fatalf("the suite reported no failures but exited with %v\noutput:\n%s", runErr, tail(out.String(), 60))
	}
}

// junitDoc is the part of the suite's junit.xml the verdict needs.
type junitDoc struct {
	Suites []struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Skipped  int `xml:"skipped,attr"`
		Disabled int `xml:"disabled,attr"`
		Cases    []struct {
			Name    string `xml:"name,attr"`
			Status  string `xml:"status,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
			} `xml:"error"`
			SystemOut string `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitFailure struct {
	name, status, detail string
}

// junitSummary holds two views of one run. The suite counts checks: one
// test case may record several failed checks, and a step with sub-steps can
// fail on its own. Its junit.xml lists only the leaf steps as test cases.
type junitSummary struct {
	// the suite's own counters (checks), the figures it prints
	total, passed, failed, errors, skipped, disabled int
	// leaf test cases by status
	cases, casesPassed, casesSkipped int
	failures                         []junitFailure // failed or errored leaf cases, by name
}

// summarizeJUnit reads the suite's counters and collects the failing cases.
func summarizeJUnit(data []byte) (junitSummary, error) {
	var doc junitDoc
	if err := xml.Unmarshal(data, &doc); err != nil {
		return junitSummary{}, err
	}
	if len(doc.Suites) == 0 {
		return junitSummary{}, fmt.Errorf("no <testsuite> element")
	}
	var s junitSummary
	for _, suite := range doc.Suites {
		s.total += suite.Tests
		s.failed += suite.Failures
		s.errors += suite.Errors
		s.skipped += suite.Skipped
		s.disabled += suite.Disabled
		for _, c := range suite.Cases {
			s.cases++
			status := c.Status
			switch {
			case c.Failure != nil:
				status = "failure"
			case c.Error != nil:
				status = "error"
			}
			switch status {
			case "passed", "":
				s.casesPassed++
			case "skipped":
				s.casesSkipped++
			default:
				s.failures = append(s.failures, junitFailure{name: c.Name, status: status, detail: strings.TrimSpace(c.SystemOut)})
			}
		}
	}
	s.passed = s.total - s.failed - s.errors - s.skipped - s.disabled
	if s.passed < 0 {
		return junitSummary{}, fmt.Errorf("suite counters do not add up: %d tests, %d failures, %d errors, %d skipped, %d disabled",
			s.total, s.failed, s.errors, s.skipped, s.disabled)
	}
	if (s.failed+s.errors == 0) != (len(s.failures) == 0) {
		return junitSummary{}, fmt.Errorf("suite counts %d failures and %d errors but %d test cases failed",
			s.failed, s.errors, len(s.failures))
	}
	sort.Slice(s.failures, func(i, j int) bool { return s.failures[i].name < s.failures[j].name })
	return s, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
