package chaos

import (
	"testing"
	"time"
)

// The checker counts a revoked answer against a later active one only when
// a revocation of that session had begun at the backend by then.
func TestCheckActiveAfterRevoked(t *testing.T) {
	start := time.Now()
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	look := func(call, ret int, a Answer) Lookup {
		return Lookup{Replica: 0, Session: "s1", Call: at(call), Return: at(ret), Answer: a}
	}
	cases := []struct {
		name          string
		revokedAt     int // ms; -1: never revoked
		wantViolation bool
		wantFalse     int
	}{
		{"revoked before the revoked answer", 5, true, 0},
		{"never revoked (failing closed)", -1, false, 1},
		{"revoked only after the revoked answer", 50, false, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &History{Start: start, Lookups: []Lookup{look(10, 20, AnswerRevoked), look(30, 40, AnswerActive)}}
			if tc.revokedAt >= 0 {
				b := at(tc.revokedAt)
				h.Revocations = []Revocation{{Covered: []string{"s1"}, Backend: b, Call: b, Return: b, OK: true}}
			}
			rep := Check(h, time.Second, time.Second, t.TempDir())
			got := false
			for _, v := range rep.Violations {
				got = got || v.Kind == "active-after-revoked"
			}
			if got != tc.wantViolation {
				t.Errorf("active-after-revoked reported = %v, want %v (%v)", got, tc.wantViolation, rep.Violations)
			}
			if rep.FalseRevoked != tc.wantFalse {
				t.Errorf("FalseRevoked = %d, want %d", rep.FalseRevoked, tc.wantFalse)
			}
		})
	}
}
