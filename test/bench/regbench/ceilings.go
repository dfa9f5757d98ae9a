package main

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"math/rand/v2"
	"os"
	"time"
)

// hashState is one stream's reusable SHA-256 state and digest buffer.
type hashState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

func newHashState() hashState {
	return hashState{h: sha256.New()}
}

// sha256Ceiling hashes total bytes in 1 MiB chunks on one goroutine and
// returns MB/s: no registry can accept a verified push faster than one
// core can hash it.
func sha256Ceiling(total int64) float64 {
	chunk := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(chunk)
	h := sha256.New()
	start := time.Now()
	for done := int64(0); done < total; done += int64(len(chunk)) {
		h.Write(chunk)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return mbps(total, time.Since(start))
}

// diskCeiling writes total bytes in 4 MiB chunks to a new file in dir and
// fsyncs it, returning MB/s including the fsync: a registry that makes
// pushes durable cannot go faster than the disk under its data dir.
func diskCeiling(dir string, total int64) (float64, error) {
	f, err := os.CreateTemp(dir, "regbench-disk-")
	if err != nil {
		return 0, fmt.Errorf("create disk probe: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	chunk := make([]byte, 4<<20)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(chunk)
	start := time.Now()
	for done := int64(0); done < total; done += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			return 0, fmt.Errorf("write disk probe: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("fsync disk probe: %w", err)
	}
	return mbps(total, time.Since(start)), nil
}

// mbps is bytes over d in MB/s (10^6 bytes).
func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}
