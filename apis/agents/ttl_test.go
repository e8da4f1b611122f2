package agents

import (
	"testing"
	"time"
)

func TestParseTTL(t *testing.T) {
	good := map[string]time.Duration{
		"30m":    30 * time.Minute,
		"24h":    24 * time.Hour,
		"30h":    30 * time.Hour,
		"30d":    30 * 24 * time.Hour,
		"1d12h":  36 * time.Hour,
		"1d":     24 * time.Hour,
		"1h30m":  90 * time.Minute,
		"0d1s":   time.Second,
		"2d0.5h": 48*time.Hour + 30*time.Minute,
	}
	for in, want := range good {
		got, err := ParseTTL(in)
		if err != nil || got != want {
			t.Errorf("ParseTTL(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "30x", "-5m", "0s", "d", "0d", "1.5d", "d12h", "1d-5h", "+5m", "5", "1d1d", "999999999999d", "106751d24h", "h"} {
		if got, err := ParseTTL(in); err == nil {
			t.Errorf("ParseTTL(%q) = %v, want an error", in, got)
		}
	}
}

func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"30m", "1d12h", "30d", "-5m", "d", "0s", "1.5h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTTL(s)
		if err == nil && d <= 0 {
			t.Fatalf("ParseTTL(%q) accepted a non-positive %v", s, d)
		}
	})
}
