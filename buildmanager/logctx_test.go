package buildmanager

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/logctx"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/testenv"
)

// The lines the manager logs while it runs an attempt carry the build's ID
// and the attempt's number, so one build's story can be read from the log.
func TestAttemptLinesCarryBuildAndAttempt(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		var out testenv.SyncBuffer
		h := start(t, e, always(behaveOK), func(o *Options) {
			o.Logger = slog.New(logctx.Handler(slog.NewTextHandler(&out, nil)))
		})
		b := h.submit(t)
		if got := h.waitEnd(t, b.ID, 60*time.Second); got.Phase != store.PhaseComplete {
			t.Fatalf("build ended %s", got.Phase)
		}
		var started string
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, `msg="worker started"`) {
				started = l
			}
		}
		if !strings.Contains(started, "build_id="+b.ID) || !strings.Contains(started, "attempt=1") {
			t.Errorf("the worker-started line lacks the build's ID or attempt: %q\n%s", started, out.String())
		}
	})
}
