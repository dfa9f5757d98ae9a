package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

func TestAccounts(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		alice := &store.Account{Kind: store.KindUser, Name: "alice", Email: "alice@example.com", PasswordHash: "$2a$x", Superuser: true, Enabled: true}
		if err := s.CreateAccount(ctx, alice); err != nil {
			t.Fatal(err)
		}
		if alice.ID == 0 || alice.CreatedAt.IsZero() {
			t.Fatalf("ID/CreatedAt not filled: %+v", alice)
		}
		got, err := s.GetAccountByName(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if *got != *alice {
			t.Fatalf("GetAccountByName = %+v, want %+v", got, alice)
		}
		org := &store.Account{Kind: store.KindOrganization, Name: "acme", Email: "alice@example.com", Enabled: true}
		if err := s.CreateAccount(ctx, org); err != nil {
			t.Fatalf("an organization may share a user's email: %v", err)
		}
		robot := &store.Account{Kind: store.KindRobot, Name: "acme+ci", OwnerID: org.ID, Enabled: true}
		if err := s.CreateAccount(ctx, robot); err != nil {
			t.Fatal(err)
		}
		got, err = s.GetAccountByID(ctx, robot.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.OwnerID != org.ID || got.Kind != store.KindRobot || got.Superuser {
			t.Fatalf("robot read back as %+v", got)
		}

		for _, a := range []*store.Account{
			{Kind: store.KindUser, Name: "alice", Email: "other@example.com"},
			{Kind: store.KindOrganization, Name: "alice"},
			{Kind: store.KindUser, Name: "alice2", Email: "alice@example.com"},
		} {
			if err := s.CreateAccount(ctx, a); !errors.Is(err, store.ErrConflict) {
				t.Errorf("CreateAccount(%s, %q) = %v, want ErrConflict", a.Name, a.Email, err)
			}
		}
		// Users without an email do not collide with each other.
		for _, name := range []string{"bob", "carol"} {
			if err := s.CreateAccount(ctx, &store.Account{Kind: store.KindUser, Name: name}); err != nil {
				t.Fatalf("user %s without email: %v", name, err)
			}
		}
		if err := s.CreateAccount(ctx, &store.Account{Kind: "admin", Name: "x"}); err == nil {
			t.Error("an invalid kind was accepted")
		}

		for kind, want := range map[store.AccountKind]int{store.KindUser: 3, store.KindOrganization: 1, store.KindRobot: 1} {
			if n, err := s.CountAccounts(ctx, kind); err != nil || n != want {
				t.Errorf("CountAccounts(%s) = %d, %v; want %d", kind, n, err, want)
			}
		}
		if _, err := s.GetAccountByName(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAccountByName(nobody) = %v, want ErrNotFound", err)
		}
		if _, err := s.GetAccountByID(ctx, 9999); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAccountByID(9999) = %v, want ErrNotFound", err)
		}
	})
}

func TestRepositories(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		if r.ID == 0 || r.Namespace != "ns" || r.Visibility != store.Private || r.CreatedAt.IsZero() {
			t.Fatalf("created repository %+v", r)
		}
		got, err := s.GetRepository(ctx, "ns", "app")
		if err != nil {
			t.Fatal(err)
		}
		if *got != *r || got.FullName() != "ns/app" {
			t.Fatalf("GetRepository = %+v, want %+v", got, r)
		}
		if err := s.CreateRepository(ctx, &store.Repository{NamespaceID: r.NamespaceID, Name: "app"}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate repository: %v, want ErrConflict", err)
		}
		if err := s.CreateRepository(ctx, &store.Repository{NamespaceID: 4242, Name: "x"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("repository in a missing namespace: %v, want ErrNotFound", err)
		}
		pub := &store.Repository{NamespaceID: r.NamespaceID, Name: "a/b/c", Visibility: store.Public, Description: "nested"}
		if err := s.CreateRepository(ctx, pub); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetRepository(ctx, "ns", "a/b/c"); err != nil || got.Visibility != store.Public || got.Description != "nested" {
			t.Fatalf("GetRepository(ns/a/b/c) = %+v, %v", got, err)
		}
		// "ns-x/..." sorts before "ns/..." because '-' < '/'; ordering by
		// (namespace, name) would get this wrong.
		fixture(t, s, "ns-x", "z")
		fixture(t, s, "a", "zz")
		want := []string{"a/zz", "ns-x/z", "ns/a/b/c", "ns/app"}
		all, err := s.ListRepositories(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if names := fullNames(all); !slices.Equal(names, want) {
			t.Fatalf("ListRepositories = %v, want %v", names, want)
		}
		var paged []string
		last := ""
		for {
			page, err := s.ListRepositories(ctx, last, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 3 {
				t.Fatalf("page of %d > 3", len(page))
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, fullNames(page)...)
			last = page[len(page)-1].FullName()
		}
		if !slices.Equal(paged, want) {
			t.Fatalf("paged ListRepositories = %v, want %v", paged, want)
		}

		if err := s.DeleteRepository(ctx, pub.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetRepository(ctx, "ns", "a/b/c"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted repository: %v, want ErrNotFound", err)
		}
		if err := s.DeleteRepository(ctx, pub.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleting twice: %v, want ErrNotFound", err)
		}
	})
}

func fullNames(rs []store.Repository) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.FullName())
	}
	return out
}

func TestBlobs(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		a, b := fixture(t, s, "ns", "a"), fixture(t, s, "ns", "b")
		blob := store.Blob{Digest: digestOf("x"), Size: 1}
		for range 2 {
			if err := s.PutBlob(ctx, a.ID, blob); err != nil {
				t.Fatalf("PutBlob (idempotent): %v", err)
			}
		}
		if got, err := s.GetBlob(ctx, blob.Digest); err != nil || *got != blob {
			t.Fatalf("GetBlob = %v, %v", got, err)
		}
		if got, err := s.GetRepoBlob(ctx, a.ID, blob.Digest); err != nil || *got != blob {
			t.Fatalf("GetRepoBlob(a) = %v, %v", got, err)
		}
		if _, err := s.GetRepoBlob(ctx, b.ID, blob.Digest); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetRepoBlob(b) before mount = %v, want ErrNotFound", err)
		}
		if err := s.PutBlob(ctx, 777, blob); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("PutBlob into a missing repository = %v, want ErrNotFound", err)
		}
		for range 2 {
			if err := s.LinkBlob(ctx, b.ID, blob.Digest); err != nil {
				t.Fatalf("LinkBlob (mount): %v", err)
			}
		}
		if got, err := s.GetRepoBlob(ctx, b.ID, blob.Digest); err != nil || *got != blob {
			t.Fatalf("GetRepoBlob(b) after mount = %v, %v", got, err)
		}
		if err := s.LinkBlob(ctx, b.ID, digestOf("unknown")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LinkBlob(unknown) = %v, want ErrNotFound", err)
		}

		if err := s.UnlinkBlob(ctx, a.ID, blob.Digest); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetRepoBlob(ctx, a.ID, blob.Digest); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetRepoBlob(a) after unlink = %v, want ErrNotFound", err)
		}
		if _, err := s.GetRepoBlob(ctx, b.ID, blob.Digest); err != nil {
			t.Errorf("unlinking from a removed b's link: %v", err)
		}
		if err := s.UnlinkBlob(ctx, a.ID, blob.Digest); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("UnlinkBlob twice = %v, want ErrNotFound", err)
		}
		if err := s.UnlinkBlob(ctx, b.ID, blob.Digest); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetBlob(ctx, blob.Digest); err != nil || *got != blob {
			t.Errorf("global blob row after unlinking everywhere = %v, %v; want kept for GC", got, err)
		}
		if _, err := s.GetBlob(ctx, digestOf("nothing")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetBlob(unknown) = %v, want ErrNotFound", err)
		}
	})
}

func TestUploads(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		u := &store.Upload{ID: "u1", RepoID: r.ID, Algorithm: "sha256", HashState: []byte("h0")}
		if err := s.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateUpload(ctx, &store.Upload{ID: "u1", RepoID: r.ID, Algorithm: "sha256"}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate upload ID = %v, want ErrConflict", err)
		}
		if err := s.CreateUpload(ctx, &store.Upload{ID: "u2", RepoID: 999, Algorithm: "sha256"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("upload into a missing repository = %v, want ErrNotFound", err)
		}
		got, err := s.GetUpload(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Offset != 0 || string(got.HashState) != "h0" || got.RepoID != r.ID || !got.CreatedAt.Equal(u.CreatedAt) {
			t.Fatalf("GetUpload = %+v", got)
		}

		step := *got
		step.Offset, step.HashState = 100, []byte("h100")
		if err := s.AdvanceUpload(ctx, &step, 0); err != nil {
			t.Fatal(err)
		}
		// A second writer that read offset 0 loses.
		lost := *got
		lost.Offset, lost.HashState = 50, []byte("h50")
		if err := s.AdvanceUpload(ctx, &lost, 0); !errors.Is(err, store.ErrStale) {
			t.Fatalf("stale AdvanceUpload = %v, want ErrStale", err)
		}
		got, err = s.GetUpload(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Offset != 100 || string(got.HashState) != "h100" {
			t.Fatalf("after CAS: offset %d state %q", got.Offset, got.HashState)
		}
		missing := store.Upload{ID: "nope", Offset: 1}
		if err := s.AdvanceUpload(ctx, &missing, 0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("AdvanceUpload(missing) = %v, want ErrNotFound", err)
		}

		if old, err := s.ListUploadsBefore(ctx, got.UpdatedAt); err != nil || len(old) != 0 {
			t.Errorf("ListUploadsBefore(updated_at) = %v, %v; want none", old, err)
		}
		old, err := s.ListUploadsBefore(ctx, got.UpdatedAt.Add(time.Nanosecond))
		if err != nil || len(old) != 1 || old[0].ID != "u1" {
			t.Errorf("ListUploadsBefore(after) = %v, %v; want [u1]", old, err)
		}

		if err := s.DeleteUpload(ctx, "u1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetUpload(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetUpload after delete = %v, want ErrNotFound", err)
		}
		if err := s.DeleteUpload(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteUpload twice = %v, want ErrNotFound", err)
		}
	})
}

func TestPutManifest(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		other := fixture(t, s, "ns", "other")
		cfg := store.Blob{Digest: digestOf("config"), Size: 6}
		layer := store.Blob{Digest: digestOf("layer"), Size: 5}
		for _, b := range []store.Blob{cfg, layer} {
			if err := s.PutBlob(ctx, r.ID, b); err != nil {
				t.Fatal(err)
			}
		}
		// A blob linked only to another repository does not count.
		foreign := store.Blob{Digest: digestOf("foreign"), Size: 7}
		if err := s.PutBlob(ctx, other.ID, foreign); err != nil {
			t.Fatal(err)
		}
		payload := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
		img := &store.Manifest{
			RepoID: r.ID, Digest: digestOf(string(payload)), MediaType: "application/vnd.oci.image.manifest.v1+json",
			Size: int64(len(payload)), Payload: payload,
			Refs: []store.Ref{{Digest: cfg.Digest, Size: cfg.Size, Kind: store.RefBlob}, {Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}},
		}

		var mre *store.MissingRefError
		bad := *img
		bad.Refs = append(slices.Clone(img.Refs), store.Ref{Digest: foreign.Digest, Size: foreign.Size, Kind: store.RefBlob})
		if err := s.PutManifest(ctx, &bad, "latest"); !errors.As(err, &mre) || mre.SizeMismatch || mre.Ref.Digest != foreign.Digest {
			t.Fatalf("missing ref: err = %v, want MissingRefError for %s", err, foreign.Digest)
		}
		bad.Refs = []store.Ref{{Digest: layer.Digest, Size: layer.Size + 1, Kind: store.RefBlob}}
		if err := s.PutManifest(ctx, &bad, "latest"); !errors.As(err, &mre) || !mre.SizeMismatch {
			t.Fatalf("size mismatch: err = %v, want MissingRefError with SizeMismatch", err)
		}
		if _, err := s.GetManifest(ctx, r.ID, img.Digest); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a rejected manifest was stored: %v", err)
		}
		if _, err := s.ResolveTag(ctx, r.ID, "latest"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a rejected manifest was tagged: %v", err)
		}

		if err := s.PutManifest(ctx, img, "latest"); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetManifest(ctx, r.ID, img.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Payload) != string(payload) || got.MediaType != img.MediaType || got.Size != img.Size || !got.CreatedAt.Equal(img.CreatedAt) {
			t.Fatalf("GetManifest = %+v", got)
		}
		wantRefs := slices.Clone(img.Refs)
		slices.SortFunc(wantRefs, func(a, b store.Ref) int { return compare(a.Digest, b.Digest) })
		if !slices.Equal(got.Refs, wantRefs) {
			t.Fatalf("refs = %v, want %v", got.Refs, wantRefs)
		}
		if d, err := s.ResolveTag(ctx, r.ID, "latest"); err != nil || d != img.Digest {
			t.Fatalf("ResolveTag = %q, %v", d, err)
		}

		// Re-putting the same digest is idempotent and keeps the original.
		again := *img
		again.MediaType = "changed"
		if err := s.PutManifest(ctx, &again, "v1"); err != nil {
			t.Fatalf("idempotent re-put: %v", err)
		}
		if got, _ := s.GetManifest(ctx, r.ID, img.Digest); got.MediaType != img.MediaType {
			t.Errorf("re-put replaced the stored manifest: media type %q", got.MediaType)
		}
		if d, _ := s.ResolveTag(ctx, r.ID, "v1"); d != img.Digest {
			t.Errorf("re-put did not tag v1: %q", d)
		}

		// An index needs its child manifests, with matching sizes.
		idxPayload := []byte(`{"schemaVersion":2,"manifests":[]}`)
		idx := &store.Manifest{
			RepoID: r.ID, Digest: digestOf(string(idxPayload)), MediaType: "application/vnd.oci.image.index.v1+json",
			Size: int64(len(idxPayload)), Payload: idxPayload,
			Refs: []store.Ref{{Digest: img.Digest, Size: img.Size + 1, Kind: store.RefManifest}},
		}
		if err := s.PutManifest(ctx, idx, "multi"); !errors.As(err, &mre) || !mre.SizeMismatch {
			t.Fatalf("index child size mismatch: %v", err)
		}
		idx.Refs = []store.Ref{{Digest: digestOf("absent"), Size: 1, Kind: store.RefManifest}}
		if err := s.PutManifest(ctx, idx, "multi"); !errors.As(err, &mre) || mre.SizeMismatch {
			t.Fatalf("index child missing: %v", err)
		}
		// A blob digest is not a manifest.
		idx.Refs = []store.Ref{{Digest: layer.Digest, Size: layer.Size, Kind: store.RefManifest}}
		if err := s.PutManifest(ctx, idx, "multi"); !errors.As(err, &mre) {
			t.Fatalf("blob given as manifest ref: %v", err)
		}
		idx.Refs = []store.Ref{{Digest: img.Digest, Size: img.Size, Kind: store.RefManifest}}
		if err := s.PutManifest(ctx, idx, "multi"); err != nil {
			t.Fatal(err)
		}

		// A layer listed twice (images may repeat an empty layer) is one ref.
		dupPayload := []byte(`{"schemaVersion":2,"layers":["same","same"]}`)
		dup := &store.Manifest{
			RepoID: r.ID, Digest: digestOf(string(dupPayload)), MediaType: "application/vnd.oci.image.manifest.v1+json",
			Size: int64(len(dupPayload)), Payload: dupPayload,
			Refs: []store.Ref{{Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}, {Digest: layer.Digest, Size: layer.Size, Kind: store.RefBlob}},
		}
		if err := s.PutManifest(ctx, dup, ""); err != nil {
			t.Fatalf("repeated layer: %v", err)
		}
		if got, err := s.GetManifest(ctx, r.ID, dup.Digest); err != nil || len(got.Refs) != 1 {
			t.Fatalf("repeated layer stored as %+v, %v", got, err)
		}

		// Moving a tag.
		second := putImage(t, s, r.ID, "second", "")
		if err := s.PutManifest(ctx, second, "latest"); err != nil {
			t.Fatal(err)
		}
		if d, _ := s.ResolveTag(ctx, r.ID, "latest"); d != second.Digest {
			t.Fatalf("latest = %s after move, want %s", d, second.Digest)
		}
		details, err := s.ListTagDetails(ctx, r.ID, "", -1)
		if err != nil {
			t.Fatal(err)
		}
		wantTags := map[string]string{"latest": second.Digest, "multi": idx.Digest, "v1": img.Digest}
		if len(details) != len(wantTags) {
			t.Fatalf("ListTagDetails = %v", details)
		}
		for _, d := range details {
			if wantTags[d.Name] != d.Digest || d.UpdatedAt.IsZero() {
				t.Errorf("tag %s = %s (updated %v), want %s", d.Name, d.Digest, d.UpdatedAt, wantTags[d.Name])
			}
		}
		if err := s.DeleteTag(ctx, r.ID, "v1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ResolveTag(ctx, r.ID, "v1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted tag resolves: %v", err)
		}
		if _, err := s.GetManifest(ctx, r.ID, img.Digest); err != nil {
			t.Errorf("DeleteTag removed the manifest: %v", err)
		}
		if err := s.DeleteTag(ctx, r.ID, "v1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteTag twice = %v, want ErrNotFound", err)
		}
		if err := s.PutManifest(ctx, &store.Manifest{RepoID: 31337, Digest: digestOf("z"), MediaType: "m", Payload: []byte("z")}, "t"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("manifest in a missing repository = %v, want ErrNotFound", err)
		}
	})
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestTagOrderAndPagination(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		m := putImage(t, s, r.ID, "x", "")
		names := []string{"v1.0-rc", "a", "_x", "A", "1.0", "latest", "Z9", "v1.0"}
		for _, n := range names {
			if err := s.PutManifest(ctx, m, n); err != nil {
				t.Fatal(err)
			}
		}
		want := slices.Clone(names)
		slices.Sort(want) // Go compares strings byte-wise.
		got, err := s.ListTags(ctx, r.ID, "", -1)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ListTags = %v, want byte order %v", got, want)
		}
		for _, n := range []int{1, 2, 3, 7} {
			var paged []string
			last := ""
			for {
				page, err := s.ListTags(ctx, r.ID, last, n)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > n {
					t.Fatalf("n=%d: page of %d", n, len(page))
				}
				if len(page) == 0 {
					break
				}
				paged = append(paged, page...)
				last = page[len(page)-1]
			}
			if !slices.Equal(paged, want) {
				t.Errorf("n=%d: paged = %v, want %v", n, paged, want)
			}
		}
		// `last` need not be an existing tag.
		if got, _ := s.ListTags(ctx, r.ID, "B", 2); !slices.Equal(got, []string{"Z9", "_x"}) {
			t.Errorf("ListTags(last=B, n=2) = %v", got)
		}
		if got, err := s.ListTags(ctx, r.ID, "", 0); err != nil || len(got) != 0 {
			t.Errorf("ListTags(n=0) = %v, %v; want empty", got, err)
		}
		details, err := s.ListTagDetails(ctx, r.ID, "_x", 2)
		if err != nil || len(details) != 2 || details[0].Name != "a" || details[1].Name != "latest" || details[0].Digest != m.Digest {
			t.Errorf("ListTagDetails(last=_x, n=2) = %v, %v", details, err)
		}
		if got, err := s.ListTags(ctx, r.ID+1000, "", -1); err != nil || len(got) != 0 {
			t.Errorf("ListTags of an unknown repository = %v, %v", got, err)
		}
	})
}

func TestDeleteManifest(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		m := putImage(t, s, r.ID, "one", "a")
		keep := putImage(t, s, r.ID, "two", "keep")
		if err := s.PutManifest(ctx, m, "b"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteManifest(ctx, r.ID, m.Digest); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetManifest(ctx, r.ID, m.Digest); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetManifest after delete = %v", err)
		}
		if tags, _ := s.ListTags(ctx, r.ID, "", -1); !slices.Equal(tags, []string{"keep"}) {
			t.Errorf("tags after delete = %v, want [keep]", tags)
		}
		if n := count(t, s, "manifest_refs", "repo_id = ? AND manifest_digest = ?", r.ID, m.Digest); n != 0 {
			t.Errorf("%d refs left for the deleted manifest", n)
		}
		if n := count(t, s, "manifest_refs", "repo_id = ? AND manifest_digest = ?", r.ID, keep.Digest); n != 1 {
			t.Errorf("other manifest has %d refs, want 1", n)
		}
		// The layer stays linked: only garbage collection unlinks blobs.
		if _, err := s.GetRepoBlob(ctx, r.ID, m.Refs[0].Digest); err != nil {
			t.Errorf("layer link after manifest delete: %v", err)
		}
		if err := s.DeleteManifest(ctx, r.ID, m.Digest); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteManifest twice = %v, want ErrNotFound", err)
		}
		// It can be pushed again.
		if err := s.PutManifest(ctx, m, "a"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetManifest(ctx, r.ID, m.Digest); err != nil || len(got.Refs) != 1 {
			t.Errorf("re-pushed manifest = %+v, %v", got, err)
		}
	})
}

func TestReferrers(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		subject := putImage(t, s, r.ID, "subject", "v1")
		var sigs []string
		put := func(body, artifactType, subj string) string {
			p := []byte(body)
			m := &store.Manifest{
				RepoID: r.ID, Digest: digestOf(body), MediaType: "application/vnd.oci.image.manifest.v1+json",
				ArtifactType: artifactType, Size: int64(len(p)), Payload: p, Subject: subj,
				Annotations: `{"org.example":"` + body + `"}`,
			}
			if err := s.PutManifest(ctx, m, ""); err != nil {
				t.Fatal(err)
			}
			return m.Digest
		}
		for i := range 3 {
			sigs = append(sigs, put(fmt.Sprintf("sig%d", i), "application/vnd.example.sig", subject.Digest))
		}
		sbom := put("sbom", "application/spdx+json", subject.Digest)
		put("unrelated", "application/vnd.example.sig", digestOf("another subject"))
		put("no subject", "application/vnd.example.sig", "")

		all, err := s.ListReferrers(ctx, r.ID, subject.Digest, "")
		if err != nil {
			t.Fatal(err)
		}
		want := append(slices.Clone(sigs), sbom)
		slices.Sort(want)
		var got []string
		for _, m := range all {
			got = append(got, m.Digest)
			if m.Payload != nil || m.Subject != subject.Digest || m.Annotations == "" || m.ArtifactType == "" {
				t.Errorf("referrer %+v", m)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ListReferrers = %v, want %v", got, want)
		}
		filtered, err := s.ListReferrers(ctx, r.ID, subject.Digest, "application/spdx+json")
		if err != nil || len(filtered) != 1 || filtered[0].Digest != sbom {
			t.Fatalf("ListReferrers(spdx) = %v, %v", filtered, err)
		}
		if none, err := s.ListReferrers(ctx, r.ID, digestOf("nothing points here"), ""); err != nil || len(none) != 0 {
			t.Fatalf("ListReferrers(unreferenced) = %v, %v", none, err)
		}
		if none, err := s.ListReferrers(ctx, r.ID, "", ""); err != nil || len(none) != 0 {
			t.Fatalf(`ListReferrers("") = %v, %v`, none, err)
		}
	})
}

func TestDeleteRepositoryCascades(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "doomed")
		survivor := fixture(t, s, "ns", "survivor")
		m := putImage(t, s, r.ID, "content", "latest")
		putImage(t, s, survivor.ID, "content", "latest")
		if err := s.PutManifest(ctx, &store.Manifest{
			RepoID: r.ID, Digest: digestOf("ref"), MediaType: "m", Size: 3, Payload: []byte("ref"), Subject: m.Digest,
		}, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateUpload(ctx, &store.Upload{ID: "up", RepoID: r.ID, Algorithm: "sha256"}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteRepository(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"manifests", "manifest_refs", "tags", "repository_blobs", "uploads"} {
			if n := count(t, s, table, "repo_id = ?", r.ID); n != 0 {
				t.Errorf("%d rows left in %s", n, table)
			}
			if table != "uploads" && count(t, s, table, "repo_id = ?", survivor.ID) == 0 {
				t.Errorf("the other repository lost its %s", table)
			}
		}
		if _, err := s.GetBlob(ctx, m.Refs[0].Digest); err != nil {
			t.Errorf("blob row must stay for GC: %v", err)
		}
	})
}

func TestConcurrentPutManifestSameTag(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := fixture(t, s, "ns", "app")
		const workers, rounds = 8, 10
		var ms []*store.Manifest
		for i := range workers {
			ms = append(ms, putImage(t, s, r.ID, fmt.Sprintf("w%d", i), ""))
		}
		shared := putImage(t, s, r.ID, "shared", "")
		var wg sync.WaitGroup
		errs := make(chan error, workers*rounds*2)
		for i := range workers {
			wg.Go(func() {
				for j := range rounds {
					m := *ms[i]
					m.CreatedAt = time.Time{}
					if err := s.PutManifest(ctx, &m, "latest"); err != nil {
						errs <- err
					}
					// Everyone also inserts one new manifest under the same
					// digest at once.
					p := []byte(fmt.Sprintf("round %d", j))
					if err := s.PutManifest(ctx, &store.Manifest{RepoID: r.ID, Digest: digestOf(string(p)), MediaType: "m",
						Size: int64(len(p)), Payload: p, Refs: []store.Ref{{Digest: shared.Digest, Size: shared.Size, Kind: store.RefManifest}}}, ""); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		d, err := s.ResolveTag(ctx, r.ID, "latest")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(ms, func(m *store.Manifest) bool { return m.Digest == d }) {
			t.Errorf("latest = %s, not one of the pushed manifests", d)
		}
		if n := count(t, s, "manifests", "repo_id = ?", r.ID); n != workers+1+rounds {
			t.Errorf("%d manifests, want %d", n, workers+1+rounds)
		}
		if n := count(t, s, "tags", "repo_id = ?", r.ID); n != 1 {
			t.Errorf("%d tags, want 1", n)
		}
	})
}

func TestMigrationsIdempotent(t *testing.T) {
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	eachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		// Several processes starting at once on an empty database.
		var wg sync.WaitGroup
		stores := make([]*Store, 3)
		errs := make([]error, len(stores))
		for i := range stores {
			wg.Go(func() { stores[i], errs[i] = Open(ctx, dsn) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("concurrent Open %d: %v", i, err)
			}
			defer stores[i].Close()
		}
		s := stores[0]
		r := fixture(t, s, "ns", "app")
		putImage(t, s, r.ID, "data", "latest")
		for range 2 {
			again := openTest(t, dsn)
			if n := count(t, again, "schema_migrations", "1 = 1"); n != len(ms) {
				t.Fatalf("schema_migrations has %d rows, want %d", n, len(ms))
			}
			if d, err := again.ResolveTag(ctx, r.ID, "latest"); err != nil || d == "" {
				t.Fatalf("data lost on reopen: %q, %v", d, err)
			}
		}
	})
}
