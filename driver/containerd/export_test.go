package containerd

// SetDumpHook has f learn where each capture's dump goes (a directory, and
// whether it is the fast one), until the returned func restores the hook.
func SetDumpHook(f func(dir string, fast bool)) func() {
	old := dumpHook
	dumpHook = f
	return func() { dumpHook = old }
}
