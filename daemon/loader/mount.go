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

// EnsureMounts mounts bpffs and cgroup2 at the configured paths when they are
// not mounted there (kmesh-start does this before probing, so the probe sees
// what the daemon will use). It reports which it mounted.
func EnsureMounts(cfg Config) (bpffs, cgroup2 bool, err error) {
	cfg.defaults()
	log := cfg.Log.WithField("subsys", "loader")
	if bpffs, err = ensureMount("bpf", cfg.BPFFSPath, log); err != nil {
		return false, false, fmt.Errorf("prepare bpffs: %w (mount the host's /sys/fs/bpf and run privileged)", err)
	}
	if cgroup2, err = ensureMount("cgroup2", cfg.Cgroup2Path, log); err != nil {
		return bpffs, false, fmt.Errorf("prepare cgroup2: %w (mount the host's /mnt and run privileged)", err)
	}
	if !bpffs && !cgroup2 {
		return false, false, nil
	}
	// Record what kmesh mounted, so the daemon's uninstall unmounts it.
	if err := os.MkdirAll(cfg.pinRoot(), 0o700); err != nil {
		return bpffs, cgroup2, fmt.Errorf("create pin directory: %w", err)
	}
	st, _ := readState(cfg.statePath())
	st.MountedBPFFS = st.MountedBPFFS || bpffs
	st.MountedCgroup2 = st.MountedCgroup2 || cgroup2
	st.Cgroup2Path = cfg.Cgroup2Path
	if err := writeState(cfg.statePath(), st); err != nil {
		return bpffs, cgroup2, err
	}
	return bpffs, cgroup2, nil
}

// cgroup2RootNote says what is wrong with attaching at dir when it is not
// the root of the cgroup2 hierarchy (the root cgroup's inode is 1): programs
// attached there see only the processes below it, as when kmesh runs in a
// private cgroup namespace. kmesh-start's probe refuses that
// (env.cgroup2_root); a daemon started by hand is told here.
func cgroup2RootNote(dir string) string {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Sprintf("could not check that %s is the cgroup2 root: %v", dir, err)
	}
	if st.Ino == 1 {
		return ""
	}
	return fmt.Sprintf("%s is not the root of the cgroup2 hierarchy (cgroup inode %d, the root is 1): the programs attached there see only the processes below it; "+
		"run kmesh in the host's cgroup namespace (the DaemonSet's hostPID, or --cgroupns=host)", dir, st.Ino)
}
