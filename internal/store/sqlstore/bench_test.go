package sqlstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

// eachBenchStore runs fn per database on a repository already holding
// 10 000 tags.
func eachBenchStore(b *testing.B, fn func(b *testing.B, s *Store, repoID int64)) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			s := openTest(b, be.newDSN(b))
			r := fixture(b, s, "bench", "big")
			bulkTags(b, s, r.ID, 10000)
			fn(b, s, r.ID)
		})
	}
}

// BenchmarkPutManifestTag measures PutManifest with a tag, each call its own
// durable transaction: "new" pushes a new manifest under a new tag, "move"
// points an existing tag at another existing manifest.
func BenchmarkPutManifestTag(b *testing.B) {
	eachBenchStore(b, func(b *testing.B, s *Store, repoID int64) {
		ctx := context.Background()
		layer := store.Blob{Digest: digestOf("bench layer"), Size: 11}
		if err := s.PutBlob(ctx, repoID, layer); err != nil {
			b.Fatal(err)
		}
		b.Run("new", func(b *testing.B) {
			i := 0
			for b.Loop() {
				p := []byte(fmt.Sprintf(`{"schemaVersion":2,"n":%d,"layers":[{"digest":%q}]}`, i, layer.Digest))
				m := &store.Manifest{
					RepoID: repoID, Digest: digestOf(string(p)), MediaType: "application/vnd.oci.image.manifest.v1+json",
					Size: int64(len(p)), Payload: p,
					Refs: []store.Ref{{Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}},
				}
				if err := s.PutManifest(ctx, m, fmt.Sprintf("new-%d", i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tags/s")
		})
		// Four writers at once, as four pushing clients: on SQLite their
		// transactions share commits (see groupCommitter).
		b.Run("new-4-writers", func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(2) // 2 × GOMAXPROCS(2) = 4 goroutines
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					p := []byte(fmt.Sprintf(`{"schemaVersion":2,"par":%d,"layers":[{"digest":%q}]}`, i, layer.Digest))
					m := &store.Manifest{
						RepoID: repoID, Digest: digestOf(string(p)), MediaType: "application/vnd.oci.image.manifest.v1+json",
						Size: int64(len(p)), Payload: p,
						Refs: []store.Ref{{Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}},
					}
					if err := s.PutManifest(ctx, m, fmt.Sprintf("par-%d", i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tags/s")
		})
		b.Run("move", func(b *testing.B) {
			var ms [2]*store.Manifest
			for j := range ms {
				p := []byte(fmt.Sprintf(`{"schemaVersion":2,"move":%d}`, j))
				ms[j] = &store.Manifest{RepoID: repoID, Digest: digestOf(string(p)), MediaType: "m", Size: int64(len(p)), Payload: p}
			}
			i := 0
			for b.Loop() {
				if err := s.PutManifest(ctx, ms[i%2], "t05000"); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tags/s")
		})
	})
}

// BenchmarkListTags reads one page of 100 tags from the middle of 10 000.
func BenchmarkListTags(b *testing.B) {
	eachBenchStore(b, func(b *testing.B, s *Store, repoID int64) {
		ctx := context.Background()
		for b.Loop() {
			tags, err := s.ListTags(ctx, repoID, "t05000", 100)
			if err != nil || len(tags) != 100 || tags[0] != "t05001" {
				b.Fatalf("ListTags = %d tags from %v, %v", len(tags), tags[:min(1, len(tags))], err)
			}
		}
	})
}
