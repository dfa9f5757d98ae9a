package store

import "testing"

func TestPhaseEnds(t *testing.T) {
	for p, want := range map[BuildPhase][2]bool{
		PhaseWaiting: {false, false}, PhaseBuildScheduled: {false, false}, PhasePushing: {false, false},
		PhaseComplete: {true, true}, PhaseError: {true, true}, PhaseInternalError: {true, true},
		PhaseCancelled: {true, true}, PhaseExpired: {false, true}, "": {false, false},
	} {
		if got := [2]bool{p.Terminal(), p.TerminalView()}; got != want {
			t.Errorf("%q: Terminal, TerminalView = %v, want %v", p, got, want)
		}
	}
	if PhaseExpired.Valid() {
		t.Error("expired is shown, never recorded, so it is not a valid phase to record")
	}
}
