package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ensureMount mounts a pseudo file system of type fstype at dir unless one is
// already there. It retries briefly: at node start mounts can race with other
// agents. It reports whether it mounted.
func ensureMount(fstype, dir string, log logrus.FieldLogger) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create mount point %s: %w", dir, err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
		has, err := mountedAs(dir, fstype)
		if err != nil {
			lastErr = err
			continue
		}
		if has {
			return false, nil
		}
		if err := unix.Mount("none", dir, fstype, 0, ""); err != nil {
			if errors.Is(err, unix.EBUSY) { // raced with another mounter
				lastErr = err
				continue
			}
			return false, fmt.Errorf("mount %s at %s: %w", fstype, dir, err)
		}
		log.WithFields(logrus.Fields{"fstype": fstype, "path": dir}).Info("mounted")
		return true, nil
	}
	return false, fmt.Errorf("mount %s at %s: %w", fstype, dir, lastErr)
}

// mountedAs reports whether dir is the mount point of a file system of fstype.
func mountedAs(dir, fstype string) (bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(abs))
	if err != nil {
		return false, fmt.Errorf("read mountinfo: %w", err)
	}
	for _, m := range ms {
		if m.FSType == fstype {
			return true, nil
		}
	}
	return false, nil
}
