package engine

import "testing"

func TestPhaseString(t *testing.T) {
	for p, want := range map[Phase]string{PhasePulling: "pulling", PhaseBuilding: "building", PhasePushing: "pushing", Phase(9): "phase(9)"} {
		if p.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(p), p.String(), want)
		}
	}
}
