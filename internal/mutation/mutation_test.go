package mutation

import "testing"

func TestGuardString(t *testing.T) {
	tests := []struct {
		g    Guard
		want string
	}{
		{GuardedFill, "GuardedFill"},
		{L1Generation, "L1Generation"},
		{Resync, "Resync"},
		{GapDetection, "GapDetection"},
		{Tracking, "Tracking"},
		{LossUnfill, "LossUnfill"},
		{UserIndex, "UserIndex"},
		{0, "Guard(0)"},
		{numGuards + 1, "Guard(8)"},
	}
	for _, tc := range tests {
		if got := tc.g.String(); got != tc.want {
			t.Errorf("Guard(%d).String() = %q, want %q", int(tc.g), got, tc.want)
		}
	}
	if n := len(Guards()); n != numGuards {
		t.Errorf("len(Guards()) = %d, want %d", n, numGuards)
	}
}

func TestNothingDisabledByDefault(t *testing.T) {
	for _, g := range Guards() {
		if Disabled(g) {
			t.Errorf("Disabled(%v) = true at start, want false", g)
		}
	}
}
