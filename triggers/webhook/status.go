package webhook

import (
	"context"
	"encoding/json"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/triggers"
	"github.com/berth-dev/berth/triggers/forge"
	"github.com/berth-dev/berth/triggers/manage"
)

// forgeTimeout bounds one commit status call.
const forgeTimeout = 30 * time.Second

// Run follows the manager's build events until ctx ends: for builds of a
// trigger it sets the commit status on the forge (pending when queued,
// success, failure, or error when cancelled, each linking the build page)
// and counts successive failures, disabling the trigger at the thresholds.
func (h *Handler) Run(ctx context.Context) error {
	sub := h.o.Manager.Events().Subscribe(256, events.BuildQueued, events.BuildSuccess, events.BuildFailure, events.BuildCancelled)
	defer sub.Unsubscribe()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-sub.C:
			if !ok {
				return nil
			}
			h.handleEvent(ctx, e)
		}
	}
}

// handleEvent processes one build event; events of manual builds are
// ignored.
func (h *Handler) handleEvent(ctx context.Context, e events.Event) {
	data, ok := e.Data.(events.BuildData)
	if !ok || data.TriggerID == "" {
		return
	}
	if e.Kind != events.BuildQueued {
		h.countResult(ctx, data)
	}
	t, err := h.o.Store.GetTrigger(ctx, data.TriggerID)
	if err != nil {
		// A trigger deleted while its build ran has no forge to tell.
		return
	}
	if t.Service == triggers.ServiceCustomGit {
		return
	}
	sha := commitOf(data.TriggerMetadata)
	if sha == "" {
		return
	}
	st := statusFor(e.Kind, data)
	b, err := h.o.Store.GetBuild(ctx, data.BuildID)
	if err != nil {
		h.log.WarnContext(ctx, "commit status: build lookup failed", "build", data.BuildID, "err", err)
		return
	}
	st.TargetURL = h.o.ExternalURL + "/repository/" + b.Namespace + "/" + b.Repository + "/build/" + b.ID
	fg, err := h.service.ForTrigger(t)
	if err != nil {
		h.log.WarnContext(ctx, "commit status: no forge client", "trigger", t.UUID, "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, forgeTimeout)
	defer cancel()
	if err := fg.SetCommitStatus(cctx, manage.BuildSource(t), sha, st); err != nil {
		h.log.WarnContext(ctx, "setting commit status failed", "trigger", t.UUID, "build", b.ID, "state", st.State, "err", err)
	}
}

// countResult feeds a build's end to the trigger's auto-disable counters.
func (h *Handler) countResult(ctx context.Context, data events.BuildData) {
	phase := store.BuildPhase(data.Phase)
	if phase != store.PhaseComplete && phase != store.PhaseError && phase != store.PhaseInternalError {
		return
	}
	t, err := h.o.Store.RecordTriggerBuild(ctx, data.TriggerID, phase, max(h.o.FailureThreshold, 0), max(h.o.InternalErrorThreshold, 0))
	if err != nil {
		h.log.DebugContext(ctx, "counting trigger build failed", "trigger", data.TriggerID, "err", err)
		return
	}
	if !t.Enabled && (t.DisabledReason == store.DisabledByFailures || t.DisabledReason == store.DisabledByInternalFailures) {
		h.log.WarnContext(ctx, "trigger disabled after successive failed builds", "trigger", t.UUID,
			"reason", t.DisabledReason, "failures", t.SuccessiveFailures, "internal_errors", t.SuccessiveInternalErrors)
	}
}

func statusFor(kind events.Kind, data events.BuildData) forge.Status {
	switch kind {
	case events.BuildQueued:
		return forge.Status{State: forge.StatePending, Description: "Build " + data.BuildName + " queued"}
	case events.BuildSuccess:
		return forge.Status{State: forge.StateSuccess, Description: "Build " + data.BuildName + " succeeded"}
	case events.BuildCancelled:
		return forge.Status{State: forge.StateError, Description: "Build " + data.BuildName + " cancelled"}
	}
	return forge.Status{State: forge.StateFailure, Description: "Build " + data.BuildName + " failed"}
}

// commitOf reads the commit out of the trigger metadata an event carries.
func commitOf(md any) string {
	var raw []byte
	switch v := md.(type) {
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	case nil:
		return ""
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		raw = b
	}
	var m struct {
		Commit string `json:"commit"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return ""
	}
	return m.Commit
}
