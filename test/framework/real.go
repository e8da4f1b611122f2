package framework

import (
	"os"
	"os/exec"
	"testing"
)

// RequireReal says whether a missing real component must fail the test
// rather than skip it (CI sets REQUIRE_REAL=1).
func RequireReal() bool {
	return os.Getenv("REQUIRE_REAL") == "1"
}

// Missing skips t because a real component is not there, or fails it under REQUIRE_REAL=1.
func Missing(t testing.TB, format string, args ...interface{}) {
	t.Helper()
	if RequireReal() {
		t.Fatalf("REQUIRE_REAL=1 and a real component is missing: "+format, args...)
	}
	t.Skipf("skipping, a real component is missing: "+format, args...)
}

// Kubectl returns the path of the real kubectl, or skips (fails under REQUIRE_REAL=1).
func Kubectl(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("kubectl")
	if err != nil {
		Missing(t, "kubectl not on PATH")
	}
	return path
}
