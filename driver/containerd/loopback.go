package containerd

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// loopbackUp brings up the loopback interface in the network namespace of
// process pid, as a CNI plugin would for a Pod: a bare restored container
// (standalone) gets a namespace of its own with lo down, so a clone could
// not reach its own servers on 127.0.0.1. Nothing is done when pid shares
// this process's namespace.
func loopbackUp(pid uint32) error {
	errc := make(chan error, 1)
	go func() {
		// The thread enters another namespace and never leaves it: it stays
		// locked, so Go ends it with this goroutine.
		runtime.LockOSThread()
		errc <- loopbackUpHere(pid)
	}()
	return <-errc
}

func loopbackUpHere(pid uint32) error {
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return err
	}
	defer target.Close()
	var ours, theirs unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &ours); err != nil {
		return err
	}
	if err := unix.Fstat(int(target.Fd()), &theirs); err != nil {
		return err
	}
	if ours.Ino == theirs.Ino && ours.Dev == theirs.Dev {
		return nil
	}
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter the network namespace of %d: %w", pid, err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("read lo's flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}
