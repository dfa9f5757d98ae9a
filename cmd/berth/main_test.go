package main

import (
	"os"
	"testing"
)

// TestMain lets a test run this test binary as berth itself: with
// BERTH_TEST_AS_BERTH=1 it is `berth <os.Args[1:]>`.
func TestMain(m *testing.M) {
	if os.Getenv("BERTH_TEST_AS_BERTH") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
