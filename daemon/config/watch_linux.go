package config

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	dirMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
		unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	fileMask = unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
)

// inotify watches with one inotify instance. Reads go through the runtime
// poller (the fd is non-blocking), so close interrupts a pending read. Any
// event only signals "look again": the watcher re-reads and compares
// content, so events need no decoding. Open/read/close-nowrite events are
// not watched, so the watcher's own reads cause none.
type inotify struct {
	file *os.File
	fd   int
	ch   chan struct{}
	done chan struct{}

	mu  sync.Mutex
	wds map[int]string // watch descriptor -> path it was added for
}

func newNotifier() (notifier, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify init: %w", err)
	}
	n := &inotify{
		file: os.NewFile(uintptr(fd), "inotify"),
		fd:   fd,
		ch:   make(chan struct{}, 1),
		done: make(chan struct{}),
		wds:  make(map[int]string),
	}
	go n.read()
	return n, nil
}

func (n *inotify) read() {
	defer close(n.done)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		if _, err := n.file.Read(buf); err != nil {
			return // closed
		}
		select {
		case n.ch <- struct{}{}:
		default:
		}
	}
}

func (n *inotify) events() <-chan struct{} { return n.ch }

func (n *inotify) watch(paths []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	want := make(map[int]string, len(paths))
	var errs []error
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue // missing: the parent directory's watch or polling notices it
		}
		mask := uint32(fileMask)
		if fi.IsDir() {
			mask = dirMask | unix.IN_ONLYDIR
		}
		wd, err := unix.InotifyAddWatch(n.fd, p, mask)
		if err != nil {
			errs = append(errs, fmt.Errorf("inotify watch %s: %w", p, err))
			continue
		}
		want[wd] = p
	}
	for wd := range n.wds {
		if _, keep := want[wd]; !keep {
			// EINVAL: the kernel already dropped it (target deleted).
			_, _ = unix.InotifyRmWatch(n.fd, uint32(wd))
		}
	}
	n.wds = want
	return errors.Join(errs...)
}

func (n *inotify) close() {
	_ = n.file.Close()
	<-n.done
}
