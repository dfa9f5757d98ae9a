// Package archtest holds the test that keeps berth's imports pointing the way
// docs/ARCHITECTURE.md draws them. It has no code of its own: `make vet` runs
// its test.
package archtest
