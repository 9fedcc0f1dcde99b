//go:build sessioncache_mutation

package mutation

import "testing"

func TestDisableRestores(t *testing.T) {
	for _, g := range Guards() {
		t.Run(g.String(), func(t *testing.T) {
			restore := Disable(g)
			if !Disabled(g) {
				t.Fatalf("Disabled(%v) after Disable = false, want true", g)
			}
			for _, other := range Guards() {
				if other != g && Disabled(other) {
					t.Errorf("Disabled(%v) after Disable(%v) = true, want false", other, g)
				}
			}
			restore()
			if Disabled(g) {
				t.Fatalf("Disabled(%v) after restore = true, want false", g)
			}
		})
	}
}
