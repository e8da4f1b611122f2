package agents

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const day = 24 * time.Hour

// ParseTTL parses spec.ttlAfterFinished: a Go duration ("90m", "1h30m") that
// may start with a whole number of days ("30d", "1d12h"). The result must be
// positive; signs are not accepted anywhere.
func ParseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("must not be empty")
	}
	if strings.ContainsAny(s, "+-") {
		return 0, errors.New("must not carry a sign")
	}
	rest := s
	var total time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, err := strconv.ParseUint(s[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%q: days must be a whole number before the d unit", s)
		}
		if days > uint64(maxDuration/day) {
			return 0, fmt.Errorf("%q: too long", s)
		}
		total = time.Duration(days) * day
		rest = s[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q: not a duration such as 30m, 24h, 30d or 1d12h", s)
		}
		if d > maxDuration-total {
			return 0, fmt.Errorf("%q: too long", s)
		}
		total += d
	}
	if total <= 0 {
		return 0, fmt.Errorf("%q: must be greater than zero", s)
	}
	return total, nil
}

const maxDuration = time.Duration(1<<63 - 1)
