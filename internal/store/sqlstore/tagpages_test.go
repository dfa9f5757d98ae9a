package sqlstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// F17(e): the REST tag listing loaded every tag and then each tag's
// manifest for every page. ListTagsNewestFirst cuts the page in SQL.
func TestListTagsNewestFirst(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		cfg := store.Blob{Digest: digestOf("config"), Size: 6}
		layer := store.Blob{Digest: digestOf("layer"), Size: 5}
		for _, b := range []store.Blob{cfg, layer} {
			if err := s.PutBlob(ctx, r.ID, b); err != nil {
				t.Fatal(err)
			}
		}
		const imageType, indexType = "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"
		img := &store.Manifest{RepoID: r.ID, Digest: digestOf("image"), MediaType: imageType, Size: 5, Payload: []byte("image"),
			Refs: []store.Ref{{Digest: cfg.Digest, Size: cfg.Size, Kind: store.RefBlob}, {Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}}}
		idx := &store.Manifest{RepoID: r.ID, Digest: digestOf("index"), MediaType: indexType, Size: 5, Payload: []byte("index"),
			Refs: []store.Ref{{Digest: img.Digest, Size: img.Size, Kind: store.RefManifest}}}
		for _, tag := range []string{"b", "a", "c"} {
			if err := s.PutManifest(ctx, img, tag); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutManifest(ctx, idx, "idx"); err != nil {
			t.Fatal(err)
		}
		// a and b changed within the same second: then the name decides,
		// as the listing always did.
		for tag, at := range map[string]time.Duration{"a": 10*time.Second + 900*time.Millisecond, "b": 10 * time.Second, "c": 20 * time.Second, "idx": 5 * time.Second} {
			if _, err := s.w.ExecContext(ctx, s.q(`UPDATE tags SET updated_at = ? WHERE repo_id = ? AND name = ?`), int64(at), r.ID, tag); err != nil {
				t.Fatal(err)
			}
		}
		names := func(ts []store.TagSummary) string {
			var n []string
			for _, t := range ts {
				n = append(n, t.Name)
			}
			return strings.Join(n, ",")
		}
		page := func(name string, offset, n int) []store.TagSummary {
			t.Helper()
			ts, err := s.ListTagsNewestFirst(ctx, r.ID, name, offset, n)
			if err != nil {
				t.Fatal(err)
			}
			return ts
		}
		all := page("", 0, -1)
		if got := names(all); got != "c,a,b,idx" {
			t.Fatalf("order %s, want c,a,b,idx", got)
		}
		if c := all[0]; c.Digest != img.Digest || c.MediaType != imageType || c.BlobSize != 11 || !c.UpdatedAt.Equal(time.Unix(20, 0)) {
			t.Fatalf("c = %+v", c)
		}
		if i := all[3]; i.MediaType != indexType || i.BlobSize != 0 {
			t.Fatalf("idx = %+v", i)
		}
		if got := names(page("", 1, 2)); got != "a,b" {
			t.Fatalf("page 2 of 2: %s", got)
		}
		if got := names(page("", 4, 2)); got != "" {
			t.Fatalf("past the end: %s", got)
		}
		if got := names(page("b", 0, 10)); got != "b" {
			t.Fatalf("only b: %s", got)
		}
		if got := names(page("nope", 0, 10)); got != "" {
			t.Fatalf("a missing tag: %s", got)
		}

		// The page is cut through the index, without reading or sorting
		// every tag of the repository.
		big := fixture(t, s, "ns", "big")
		bulkTags(t, s, big.ID, 10000)
		if s.Dialect() == "postgres" {
			if _, err := s.w.Exec(`ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		plan := queryPlan(t, s, `SELECT repo_id, name, digest, updated_at FROM tags WHERE repo_id = ? AND (? = '' OR name = ?)
			ORDER BY updated_at / 1000000000 DESC, name LIMIT ? OFFSET ?`, big.ID, "", "", int64(50), int64(100))
		bad := []string{"SCAN ", "TEMP B-TREE"}
		if s.Dialect() == "postgres" {
			bad = []string{"Seq Scan", "Sort"}
		}
		for _, b := range bad {
			if strings.Contains(plan, b) {
				t.Errorf("tag page plan has %q:\n%s", b, plan)
			}
		}
		if ts, err := s.ListTagsNewestFirst(ctx, big.ID, "", 9990, 50); err != nil || len(ts) != 10 {
			t.Fatalf("last page of 10000: %d tags, %v", len(ts), err)
		}
	})
}
