package framework

import (
	"os"
	"os/exec"
	"path/filepath"
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

// E2BSDK is the folder of the E2B SDK test scripts, with the real E2B JS
// SDK installed from npm (Missing when node or the package is not there).
func E2BSDK(t testing.TB) string {
	dir := filepath.Join(RepoRoot(), "test", "e2b")
	if _, err := exec.LookPath("node"); err != nil {
		Missing(t, "node not on PATH")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "e2b")); err != nil {
		Missing(t, "the e2b npm package is not installed (cd test/e2b && npm ci)")
	}
	return dir
}

// RequireTool returns the path of a command the test needs (skopeo,
// docker-registry ...), or skips (fails under REQUIRE_REAL=1).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not on PATH (hack/install-test-deps.sh installs it)", name)
	}
	return path
}
