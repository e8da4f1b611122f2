package driver

import (
	"errors"
	"testing"
)

func TestValidateID(t *testing.T) {
	for _, id := range []string{"ckpt-0123456789abcdef01234567", "ckpt-web", "a"} {
		if err := ValidateID(id); err != nil {
			t.Errorf("%q refused: %v", id, err)
		}
	}
	for _, id := range []string{"", "../etc", "*", "ckpt-*", "a/b", "A", "x:latest", "-a", "a-", "ckpt-0123456789abcdef01234567-0123456789abcdef0123456789abcdef0123"} {
		if err := ValidateID(id); !errors.Is(err, ErrInvalidID) {
			t.Errorf("%q: %v, want ErrInvalidID", id, err)
		}
	}
}
