package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

func newBuild(repo *store.Repository, id string) *store.Build {
	return &store.Build{
		ID:          id,
		RepoID:      repo.ID,
		DisplayName: "build " + id,
		Tags:        []string{"latest", "v1"},
		Request: store.BuildRequest{
			FileID:         "file-" + id,
			DockerfilePath: "/Dockerfile",
			BuildArgs:      map[string]string{"A": "1"},
			Labels:         map[string]string{"l": "v"},
			Target:         "final",
			NoCache:        true,
		},
		TriggerID:       "trig-1",
		TriggerMetadata: json.RawMessage(`{"commit":"abc"}`),
	}
}

func TestBuildCreateGet(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		owner, err := s.GetAccountByName(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		b := newBuild(repo, "b1")
		b.RequesterID = owner.ID
		if err := s.CreateBuild(ctx, b); err != nil {
			t.Fatalf("CreateBuild: %v", err)
		}
		if b.Phase != store.PhaseWaiting || b.Version != 1 || b.CreatedAt.IsZero() {
			t.Fatalf("created build: phase %q version %d created %v", b.Phase, b.Version, b.CreatedAt)
		}
		got, err := s.GetBuild(ctx, "b1")
		if err != nil {
			t.Fatalf("GetBuild: %v", err)
		}
		if got.Namespace != "alice" || got.Repository != "app" || got.NamespaceID != repo.NamespaceID || got.Requester != "alice" {
			t.Errorf("names: %+v", got)
		}
		if !reflect.DeepEqual(got.Tags, b.Tags) || !reflect.DeepEqual(got.Request, b.Request) {
			t.Errorf("round trip: tags %v request %+v", got.Tags, got.Request)
		}
		if string(got.TriggerMetadata) != `{"commit":"abc"}` || got.TriggerID != "trig-1" {
			t.Errorf("trigger: %q %s", got.TriggerID, got.TriggerMetadata)
		}
		if !got.StartedAt.IsZero() || !got.LeaseExpiry.IsZero() || !got.CreatedAt.Equal(b.CreatedAt) {
			t.Errorf("times: %+v", got)
		}
		if err := s.CreateBuild(ctx, newBuild(repo, "b1")); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate ID: %v, want ErrConflict", err)
		}
		if _, err := s.GetBuild(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing build: %v", err)
		}
		if err := s.CreateBuild(ctx, &store.Build{ID: "x", RepoID: 999999}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing repository: %v, want ErrNotFound", err)
		}
	})
}

func TestBuildUpdateCompareAndSet(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		b := newBuild(repo, "b1")
		if err := s.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		stale := *b
		started := time.Now().UTC().Round(0)
		b.Phase, b.Attempts, b.StartedAt = store.PhaseBuildScheduled, 1, started
		b.ExecutorName, b.ExecutionID, b.LeaseExpiry = "local", "exec-1", started.Add(time.Minute)
		if err := s.UpdateBuild(ctx, b); err != nil {
			t.Fatalf("UpdateBuild: %v", err)
		}
		if b.Version != 2 {
			t.Errorf("version %d, want 2", b.Version)
		}
		stale.Phase = store.PhaseCancelled
		if err := s.UpdateBuild(ctx, &stale); !errors.Is(err, store.ErrStale) {
			t.Fatalf("stale update: %v, want ErrStale", err)
		}
		got, _ := s.GetBuild(ctx, "b1")
		if got.Phase != store.PhaseBuildScheduled || !got.StartedAt.Equal(started) || got.ExecutionID != "exec-1" || got.Attempts != 1 {
			t.Fatalf("after update: %+v", got)
		}

		// Lease and execution move without bumping the version, and only
		// for the current attempt.
		until := started.Add(time.Hour)
		if err := s.RenewBuildLease(ctx, "b1", 1, until); err != nil {
			t.Fatalf("RenewBuildLease: %v", err)
		}
		if err := s.RenewBuildLease(ctx, "b1", 2, until); !errors.Is(err, store.ErrStale) {
			t.Errorf("lease of another attempt: %v, want ErrStale", err)
		}
		if err := s.SetBuildExecution(ctx, "b1", 1, "k8s", "job-9"); err != nil {
			t.Fatalf("SetBuildExecution: %v", err)
		}
		got, _ = s.GetBuild(ctx, "b1")
		if !got.LeaseExpiry.Equal(until) || got.ExecutorName != "k8s" || got.ExecutionID != "job-9" || got.Version != 2 {
			t.Fatalf("after renew: lease %v executor %s/%s version %d", got.LeaseExpiry, got.ExecutorName, got.ExecutionID, got.Version)
		}

		// Terminal phases never change.
		got.Phase, got.CompletedAt = store.PhaseComplete, time.Now()
		got.ManifestDigests = map[string]string{"latest": "sha256:aa"}
		if err := s.UpdateBuild(ctx, got); err != nil {
			t.Fatalf("complete: %v", err)
		}
		again := *got
		again.Phase = store.PhaseError
		if err := s.UpdateBuild(ctx, &again); !errors.Is(err, store.ErrStale) {
			t.Errorf("update of a terminal build: %v, want ErrStale", err)
		}
		if err := s.RenewBuildLease(ctx, "b1", 1, until); !errors.Is(err, store.ErrStale) {
			t.Errorf("lease of a terminal build: %v, want ErrStale", err)
		}
		final, _ := s.GetBuild(ctx, "b1")
		if final.Phase != store.PhaseComplete || final.ManifestDigests["latest"] != "sha256:aa" {
			t.Errorf("final: %+v", final)
		}
		if err := s.SetBuildLogsArchive(ctx, "b1", "sha256:logs"); err != nil {
			t.Fatal(err)
		}
		if final, _ = s.GetBuild(ctx, "b1"); final.LogsArchive != "sha256:logs" {
			t.Errorf("logs archive %q", final.LogsArchive)
		}
		if err := s.UpdateBuild(ctx, &store.Build{ID: "nope", Phase: store.PhaseWaiting}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("update of a missing build: %v", err)
		}
	})
}

// Concurrent compare-and-set: exactly one of many writers holding the same
// version wins.
func TestBuildUpdateRace(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		b := newBuild(repo, "b1")
		if err := s.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := *b
				c.Phase, c.ErrorMessage = store.PhaseError, fmt.Sprint(i)
				err := s.UpdateBuild(ctx, &c)
				if err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if !errors.Is(err, store.ErrStale) {
					t.Errorf("UpdateBuild: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d writers won, want 1", wins)
		}
	})
}

func buildIDs(bs []store.Build) []string {
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	return ids
}

func TestBuildListings(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		app := fixture(t, s, "alice", "app")
		other := fixture(t, s, "alice", "other")
		bobs := fixture(t, s, "bob", "app")
		for i := range 4 {
			if err := s.CreateBuild(ctx, newBuild(app, fmt.Sprintf("a%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateBuild(ctx, newBuild(other, "o0")); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateBuild(ctx, newBuild(bobs, "x0")); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListBuilds(ctx, app.ID, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ids := buildIDs(list); !reflect.DeepEqual(ids, []string{"a3", "a2", "a1", "a0"}) {
			t.Fatalf("ListBuilds = %v, want newest first", ids)
		}
		if list, _ = s.ListBuilds(ctx, app.ID, time.Time{}, 2); len(list) != 2 || list[0].ID != "a3" {
			t.Errorf("limit 2: %v", list)
		}
		if list, _ = s.ListBuilds(ctx, app.ID, list[1].CreatedAt, 0); len(list) != 2 {
			t.Errorf("since: %d builds, want 2", len(list))
		}

		a1, _ := s.GetBuild(ctx, "a1")
		a1.Phase, a1.Attempts = store.PhaseBuilding, 1
		if err := s.UpdateBuild(ctx, a1); err != nil {
			t.Fatal(err)
		}
		a2, _ := s.GetBuild(ctx, "a2")
		a2.Phase = store.PhaseCancelled
		if err := s.UpdateBuild(ctx, a2); err != nil {
			t.Fatal(err)
		}
		// Unfinished: the waiting builds and the running a1, oldest first;
		// the cancelled a2 is left out.
		unfinished, err := s.ListUnfinishedBuilds(ctx, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := buildIDs(unfinished), []string{"a0", "a1", "a3", "o0", "x0"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("ListUnfinishedBuilds = %v, want %v", got, want)
		}
		if unfinished[1].Phase != store.PhaseBuilding {
			t.Errorf("a1 listed in phase %s, want building", unfinished[1].Phase)
		}
		// Pages of two, each after the last build of the one before.
		var pages [][]string
		var after *store.Build
		for range 5 {
			page, err := s.ListUnfinishedBuilds(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			pages = append(pages, buildIDs(page))
			after = &page[len(page)-1]
		}
		if want := [][]string{{"a0", "a1"}, {"a3", "o0"}, {"x0"}}; !reflect.DeepEqual(pages, want) {
			t.Errorf("pages of 2 = %v, want %v", pages, want)
		}
		n, err := s.CountNamespaceBuilds(ctx, app.NamespaceID, store.PhaseWaiting, store.PhaseBuilding)
		if err != nil || n != 4 { // a0, a1, a3, o0
			t.Errorf("CountNamespaceBuilds(alice) = %d, %v; want 4", n, err)
		}
		if n, _ := s.CountNamespaceBuilds(ctx, bobs.NamespaceID, store.PhaseWaiting); n != 1 {
			t.Errorf("CountNamespaceBuilds(bob) = %d, want 1", n)
		}

		// A deleted repository takes its builds along.
		if err := s.DeleteRepository(ctx, other.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetBuild(ctx, "o0"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("build of a deleted repository: %v", err)
		}
	})
}

func TestBuildFiles(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		f := &store.BuildFile{ID: "f1", Digest: digestOf("ctx"), Size: 3}
		if err := s.PutBuildFile(ctx, f); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetBuildFile(ctx, "f1")
		if err != nil || got.Digest != f.Digest || got.Size != 3 || !got.CreatedAt.Equal(f.CreatedAt) {
			t.Fatalf("GetBuildFile = %+v, %v", got, err)
		}
		if err := s.PutBuildFile(ctx, f); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate file: %v", err)
		}
		if _, err := s.GetBuildFile(ctx, "f2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing file: %v", err)
		}
	})
}

// A trigger's builds come back newest first, limited and filtered by phase
// in SQL, through the (trigger_id, created_at) index.
func TestListTriggerBuilds(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		for i, trig := range []string{"t1", "t2", "t1", "", "t1"} {
			b := newBuild(repo, fmt.Sprintf("b%d", i))
			b.TriggerID = trig
			if err := s.CreateBuild(ctx, b); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		started, err := s.GetBuild(ctx, "b4")
		if err != nil {
			t.Fatal(err)
		}
		started.Phase = store.PhaseBuilding
		if err := s.UpdateBuild(ctx, started); err != nil {
			t.Fatal(err)
		}
		if bs, err := s.ListTriggerBuilds(ctx, "t1", 0); err != nil || !reflect.DeepEqual(buildIDs(bs), []string{"b4", "b2", "b0"}) {
			t.Errorf("all of t1 = %v, %v; want b4 b2 b0", buildIDs(bs), err)
		}
		if bs, err := s.ListTriggerBuilds(ctx, "t1", 2); err != nil || !reflect.DeepEqual(buildIDs(bs), []string{"b4", "b2"}) {
			t.Errorf("two of t1 = %v, %v; want b4 b2", buildIDs(bs), err)
		}
		if bs, err := s.ListTriggerBuilds(ctx, "t1", 0, store.PhaseWaiting); err != nil || !reflect.DeepEqual(buildIDs(bs), []string{"b2", "b0"}) {
			t.Errorf("waiting of t1 = %v, %v; want b2 b0", buildIDs(bs), err)
		}
		if bs, err := s.ListTriggerBuilds(ctx, "", 0); err != nil || len(bs) != 0 {
			t.Errorf("builds of no trigger = %v, %v; want none", buildIDs(bs), err)
		}
		plan := queryPlan(t, s, buildSelect+`WHERE b.trigger_id = ? AND b.trigger_id <> '' ORDER BY b.created_at DESC, b.id DESC LIMIT ?`, "t1", 5)
		if !strings.Contains(plan, "builds_trigger_created") {
			t.Errorf("the trigger's builds are not read through builds_trigger_created:\n%s", plan)
		}
	})
}
