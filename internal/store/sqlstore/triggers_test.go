package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

func newTrigger(t *testing.T, s *Store, repo *store.Repository, uuid string) *store.Trigger {
	t.Helper()
	tr := &store.Trigger{UUID: uuid, RepoID: repo.ID, Service: "custom-git", Enabled: true,
		Config: []byte(`{"build_source":"git@example.com:a/b.git"}`)}
	if err := s.CreateTrigger(context.Background(), tr); err != nil {
		t.Fatalf("CreateTrigger: %v", err)
	}
	return tr
}

func TestTriggersCRUD(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		alice, _ := s.GetAccountByName(ctx, "alice")
		tr := &store.Trigger{UUID: "t-1", RepoID: repo.ID, Service: "github", Enabled: true, ConnectedUserID: alice.ID}
		if err := s.CreateTrigger(ctx, tr); err != nil {
			t.Fatal(err)
		}
		if tr.Namespace != "alice" || tr.Repository != "app" || tr.ConnectedUser != "alice" ||
			string(tr.Config) != "{}" || tr.CreatedAt.IsZero() || tr.Active() {
			t.Fatalf("created %+v", tr)
		}
		if err := s.CreateTrigger(ctx, &store.Trigger{UUID: "t-1", RepoID: repo.ID, Service: "github"}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("duplicate UUID: %v", err)
		}
		if err := s.CreateTrigger(ctx, &store.Trigger{UUID: "t-x", RepoID: 9999, Service: "github"}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing repository: %v", err)
		}
		if err := s.CreateTrigger(ctx, &store.Trigger{UUID: "t-y", RepoID: repo.ID, Service: "svn"}); err == nil {
			t.Fatal("unknown service accepted")
		}
		if err := s.CreateTrigger(ctx, &store.Trigger{UUID: "t-z", RepoID: repo.ID, Service: "github", Config: []byte(`[1]`)}); err == nil {
			t.Fatal("non-object config accepted")
		}

		tr.Config = []byte(`{"build_source":"octo/app","tag_templates":["${commit_info.short_sha}"]}`)
		tr.SealedSecret, tr.SealedPrivateKey, tr.SealedAuthToken = []byte{1, 2, 0, 3}, []byte("pk"), []byte("tok")
		tr.PublicKey, tr.KnownHosts, tr.PullRobot = "ssh-ed25519 AAAA", "[h]:22 ssh-ed25519 BBBB", "alice+bot"
		tr.HookID, tr.DeployKeyID = "11", "22"
		tr.Enabled, tr.DisabledReason, tr.DisabledAt = false, store.DisabledByUser, time.Unix(1700000000, 5).UTC()
		if err := s.UpdateTrigger(ctx, tr); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetTrigger(ctx, "t-1")
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Config) != string(tr.Config) || string(got.SealedSecret) != "\x01\x02\x00\x03" ||
			string(got.SealedPrivateKey) != "pk" || string(got.SealedAuthToken) != "tok" || got.PublicKey != tr.PublicKey ||
			got.KnownHosts != tr.KnownHosts || got.PullRobot != "alice+bot" || got.HookID != "11" || got.DeployKeyID != "22" ||
			got.Enabled || got.DisabledReason != store.DisabledByUser || !got.DisabledAt.Equal(tr.DisabledAt) || !got.Active() {
			t.Fatalf("after update %+v", got)
		}
		if err := s.UpdateTrigger(ctx, &store.Trigger{UUID: "nope", Service: "github"}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("update missing: %v", err)
		}

		newTrigger(t, s, repo, "t-2")
		other := fixture(t, s, "bob", "app")
		newTrigger(t, s, other, "t-3")
		list, err := s.ListTriggers(ctx, repo.ID)
		if err != nil || len(list) != 2 || list[0].UUID != "t-1" || list[1].UUID != "t-2" {
			t.Fatalf("list: %v %+v", err, list)
		}

		if err := s.DeleteTrigger(ctx, "t-2"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetTrigger(ctx, "t-2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("get deleted: %v", err)
		}
		if err := s.DeleteTrigger(ctx, "t-2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
		// The repository's deletion takes its triggers along.
		if err := s.DeleteRepository(ctx, other.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetTrigger(ctx, "t-3"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("trigger of deleted repository: %v", err)
		}
	})
}

func TestTriggerAutoDisable(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		newTrigger(t, s, repo, "t-1")
		rec := func(p store.BuildPhase) *store.Trigger {
			t.Helper()
			tr, err := s.RecordTriggerBuild(ctx, "t-1", p, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			return tr
		}
		rec(store.PhaseError)
		rec(store.PhaseError)
		if tr := rec(store.PhaseComplete); tr.SuccessiveFailures != 0 || !tr.Enabled {
			t.Fatalf("success did not reset: %+v", tr)
		}
		rec(store.PhaseError)
		rec(store.PhaseError)
		if tr := rec(store.PhaseCancelled); tr.SuccessiveFailures != 2 {
			t.Fatalf("cancel changed the count: %+v", tr)
		}
		tr := rec(store.PhaseError)
		if tr.Enabled || tr.DisabledReason != store.DisabledByFailures || tr.DisabledAt.IsZero() || tr.SuccessiveFailures != 3 {
			t.Fatalf("third failure: %+v", tr)
		}

		newTrigger(t, s, repo, "t-2")
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.RecordTriggerBuild(ctx, "t-2", store.PhaseInternalError, 0, 10); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		tr, err := s.GetTrigger(ctx, "t-2")
		if err != nil || tr.SuccessiveInternalErrors != 4 || !tr.Enabled {
			t.Fatalf("concurrent internal errors: %v %+v", err, tr)
		}
		for range 6 {
			tr, _ = s.RecordTriggerBuild(ctx, "t-2", store.PhaseInternalError, 0, 10)
		}
		if tr.Enabled || tr.DisabledReason != store.DisabledByInternalFailures {
			t.Fatalf("tenth internal error: %+v", tr)
		}
		// Threshold 0 never disables.
		newTrigger(t, s, repo, "t-3")
		for range 5 {
			tr, _ = s.RecordTriggerBuild(ctx, "t-3", store.PhaseError, 0, 0)
		}
		if !tr.Enabled || tr.SuccessiveFailures != 5 {
			t.Fatalf("threshold 0: %+v", tr)
		}
		if _, err := s.RecordTriggerBuild(ctx, "nope", store.PhaseError, 1, 1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown trigger: %v", err)
		}
	})
}

func TestTriggerDeliveries(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		repo := fixture(t, s, "alice", "app")
		newTrigger(t, s, repo, "t-1")
		newTrigger(t, s, repo, "t-2")
		base := time.Unix(1700000000, 0).UTC()
		add := func(trigger, id string, i int) bool {
			t.Helper()
			ok, err := s.AddTriggerDelivery(ctx, &store.TriggerDelivery{ID: id, TriggerUUID: trigger,
				ReceivedAt: base.Add(time.Duration(i) * time.Second), Event: "push", Status: store.DeliveryRejected, Reason: "processing"})
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if !add("t-1", "d-1", 0) || add("t-1", "d-1", 1) {
			t.Fatal("replay of d-1 was not detected")
		}
		// The same id on another trigger is another delivery.
		if !add("t-2", "d-1", 0) {
			t.Fatal("d-1 on t-2 reported as a replay")
		}
		// Concurrent deliveries of one id: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.AddTriggerDelivery(ctx, &store.TriggerDelivery{ID: "race", TriggerUUID: "t-1", Status: store.DeliverySkipped})
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d concurrent inserts of one delivery won", wins)
		}
		if _, err := s.AddTriggerDelivery(ctx, &store.TriggerDelivery{ID: "x", TriggerUUID: "nope", Status: store.DeliverySkipped}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delivery of unknown trigger: %v", err)
		}
		if err := s.FinishTriggerDelivery(ctx, "t-1", "d-1", store.DeliveryAccepted, "", "build-1"); err != nil {
			t.Fatal(err)
		}
		if err := s.FinishTriggerDelivery(ctx, "t-1", "nope", store.DeliveryAccepted, "", ""); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("finish unknown: %v", err)
		}
		for i := 2; i < 6; i++ {
			add("t-1", fmt.Sprintf("d-%d", i), i)
		}
		list, err := s.ListTriggerDeliveries(ctx, "t-1", 0)
		if err != nil || len(list) != 6 {
			t.Fatalf("list: %v %d", err, len(list))
		}
		// "race" was received now, after every d-i.
		if list[0].ID != "race" || list[1].ID != "d-5" || list[5].ID != "d-1" {
			t.Fatalf("order: %+v", list)
		}
		d1 := list[5]
		if d1.Status != store.DeliveryAccepted || d1.BuildID != "build-1" || d1.Event != "push" || !d1.ReceivedAt.Equal(base) {
			t.Fatalf("d-1: %+v", d1)
		}
		if l, _ := s.ListTriggerDeliveries(ctx, "t-1", 2); len(l) != 2 || l[1].ID != "d-5" {
			t.Fatalf("limit 2: %+v", l)
		}
		n, err := s.PruneTriggerDeliveries(ctx, "t-1", 3)
		if err != nil || n != 3 {
			t.Fatalf("prune: %d %v", n, err)
		}
		if l, _ := s.ListTriggerDeliveries(ctx, "t-1", 0); len(l) != 3 || l[2].ID != "d-4" {
			t.Fatalf("after prune: %+v", l)
		}
		if l, _ := s.ListTriggerDeliveries(ctx, "t-2", 0); len(l) != 1 {
			t.Fatalf("prune touched t-2: %+v", l)
		}
		if err := s.DeleteTrigger(ctx, "t-1"); err != nil {
			t.Fatal(err)
		}
		if got := count(t, s, "trigger_deliveries", "trigger_uuid = ?", "t-1"); got != 0 {
			t.Fatalf("%d deliveries outlived their trigger", got)
		}
	})
}
