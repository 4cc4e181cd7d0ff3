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
// already there, and reports whether it mounted. At node start another agent
// (or a second kmesh container) can mount the same directory at the same
// moment. mount(2) does not refuse a second mount on a mount point: it stacks
// it, and pins made in the lower one become invisible. kmesh mounters take
// turns (an exclusive flock on dir's parent directory, which every kmesh
// container on the node sees through the same host mount); against other
// agents, ensureMount learns the ID of the mount it made and settles a stack
// it finds itself in: the lowest mount wins, a kmesh mount above another one
// is removed again.
func ensureMount(fstype, dir string, log logrus.FieldLogger) (bool, error) {
	return mounter{log: log}.ensure(fstype, dir)
}

// mountAttempts bounds ensureMount's tries: a race at node start settles in
// one or two; sleeps of 0.1, 0.2, 0.3, 0.4 s come between them.
const mountAttempts = 5

// mounter carries ensureMount's steps. between, when set (tests), runs in
// each attempt where another agent's mount or unmount can land: before
// kmesh's mount(2) ("mount") and between it and settling the stack
// ("settle").
type mounter struct {
	log     logrus.FieldLogger
	between func(step string, attempt int)
	// classic mounts with mount(2) only, as where a seccomp profile
	// filters fsopen (tests run both ways)
	classic bool
}

func (mt mounter) ensure(fstype, dir string) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create mount point %s: %w", dir, err)
	}
	log := mt.log.WithFields(logrus.Fields{"fstype": fstype, "path": dir})
	unlock, err := lockDir(filepath.Dir(dir))
	if err != nil {
		log.WithError(err).Warn("mounting without the lock kmesh mounters share: a kmesh container starting at the same moment may stack a mount (settled as for other agents)")
	} else {
		defer unlock()
	}
	var lastErr error
	for attempt := 0; attempt < mountAttempts; attempt++ {
		if attempt > 0 {
			log.WithError(lastErr).WithField("attempt", attempt+1).Info("mount raced with another agent: looking again")
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
		stack, err := mountStack(dir, fstype)
		if err != nil {
			lastErr = err
			continue
		}
		if len(stack) > 0 {
			if len(stack) > 1 {
				log.WithField("mount_ids", stackIDs(stack)).Warn("several mounts are stacked at this path (an earlier mount race): kmesh uses the top one; " +
					"pins in the lower ones are not visible (unmount the extra ones, then restart kmesh)")
			}
			return false, nil
		}
		mt.step("mount", attempt)
		id, err := mt.mount(fstype, dir)
		if err != nil {
			// cgroup2 has one superblock per cgroup namespace, and mount(2)
			// refuses it twice on one mount point: another agent mounted it
			// since the look above (move_mount stacks it instead, and
			// settleStack removes it)
			if errors.Is(err, unix.EBUSY) {
				lastErr = fmt.Errorf("a mount appeared after the check: %w", err)
				continue
			}
			return false, fmt.Errorf("mount %s at %s: %w", fstype, dir, err)
		}
		mt.step("settle", attempt)
		mine, err := settleStack(fstype, dir, id, log)
		if errors.Is(err, errMountGone) { // another agent removed it: look again
			lastErr = err
			continue
		}
		if err != nil {
			return false, fmt.Errorf("mount %s at %s: %w", fstype, dir, err)
		}
		if mine {
			log.WithField("mount_id", id).Info("mounted")
		}
		return mine, nil
	}
	return false, fmt.Errorf("mount %s at %s: gave up after %d attempts: %w", fstype, dir, mountAttempts, lastErr)
}

func (mt mounter) step(name string, attempt int) {
	if mt.between != nil {
		mt.between(name, attempt)
	}
}

func (mt mounter) mount(fstype, dir string) (uint64, error) {
	if mt.classic {
		return mountClassic(fstype, dir)
	}
	return mountAt(fstype, dir)
}

// lockDir takes an exclusive flock on directory dir; unlock releases it.
func lockDir(dir string) (unlock func(), err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s to lock it: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { unix.Close(fd) }, nil // closing the last descriptor releases the lock
}

// errMountGone: the mount kmesh made is no longer at its mount point.
var errMountGone = errors.New("the new mount is no longer at its mount point: another agent unmounted or moved it")

// mountAt mounts a new fstype at dir and returns the new mount's ID. It
// creates the mount detached (fsopen, fsmount) so that its ID is known before
// it appears at dir, then moves it there. Where those calls are filtered
// (seccomp profiles that predate them answer ENOSYS or EPERM) it falls back
// to mount(2) and reads the ID at dir at once after.
func mountAt(fstype, dir string) (uint64, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		return mountClassic(fstype, dir)
	}
	if err != nil {
		return 0, fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return 0, fmt.Errorf("create the file system: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	id, err := mountID(mfd, "")
	if err != nil {
		return 0, err
	}
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return 0, fmt.Errorf("move the new mount to %s: %w", dir, err)
	}
	return id, nil
}

// mountClassic is mountAt with mount(2): the ID is read at dir right after,
// so a mount stacked over it in between is taken for kmesh's (settleStack
// then removes that one, or finds kmesh's mount missing and says so).
func mountClassic(fstype, dir string) (uint64, error) {
	if err := unix.Mount("none", dir, fstype, 0, ""); err != nil {
		return 0, err
	}
	return mountID(unix.AT_FDCWD, dir)
}

// mountID is the ID of the mount path (relative to dirfd; "" for dirfd
// itself) is on, as /proc/self/mountinfo numbers it.
func mountID(dirfd int, path string) (uint64, error) {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if path == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, path, flags, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, fmt.Errorf("read the mount ID of %q: %w", path, err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("read the mount ID of %q: %w (kernel older than 5.8)", path, unix.EOPNOTSUPP)
	}
	return stx.Mnt_id, nil
}

// settleStack runs after kmesh put mount id at dir. Alone there, the mount is
// kmesh's. Above another fstype mount, kmesh lost a race: it removes its own
// mount and uses the one below. Below others, kmesh won: it waits briefly for
// them to go (another kmesh removes its own); one that stays belongs to an
// agent that does not settle races, and kmesh then leaves both, uses the
// visible one, does not claim it, and warns. Mount IDs are reused once freed:
// had another agent removed kmesh's mount and made one that got its ID in
// the milliseconds before this looks, kmesh would take that one for its own.
func settleStack(fstype, dir string, id uint64, log logrus.FieldLogger) (mine bool, err error) {
	deadline := time.Now().Add(time.Second)
	var busy error // the last unmount of ours refused as busy
	for {
		stack, err := mountStack(dir, fstype)
		if err != nil {
			return false, err
		}
		pos := -1
		for i, m := range stack {
			if uint64(m.ID) == id {
				pos = i
			}
		}
		switch {
		case pos < 0:
			return false, fmt.Errorf("mount ID %d at %s: %w", id, dir, errMountGone)
		case len(stack) == 1:
			return true, nil
		case pos > 0 && pos == len(stack)-1:
			// another mount was there first; remove ours, the top one
			if top, err := mountID(unix.AT_FDCWD, dir); err != nil || top != id {
				break // changed under us: look again
			}
			err := unix.Unmount(dir, unix.UMOUNT_NOFOLLOW)
			if errors.Is(err, unix.EBUSY) {
				// another mounter's path lookup holds it for a moment
				busy = fmt.Errorf("remove kmesh's mount (ID %d) stacked on mount %d: %w", id, stack[pos-1].ID, err)
				break
			}
			if err != nil {
				return false, fmt.Errorf("remove kmesh's mount (ID %d) stacked on mount %d: %w", id, stack[pos-1].ID, err)
			}
			log.WithFields(logrus.Fields{"mount_id": stack[pos-1].ID}).Info("another agent mounted at the same moment: using its mount")
			return false, nil
		}
		if time.Now().After(deadline) {
			if busy != nil && pos == len(stack)-1 {
				return false, busy
			}
			log.WithFields(logrus.Fields{"mount_id": id, "mount_ids": stackIDs(stack)}).Warn("another agent mounted over kmesh's mount at the same moment and kept its mount: " +
				"kmesh uses the visible one and leaves its own (empty, hidden) below it; unmount the extra one when convenient")
			return false, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountStack returns the fstype mounts at dir, lowest first (each one after
// the first is mounted over the one before it).
func mountStack(dir, fstype string) ([]*mountinfo.Info, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	// every entry at abs (mountinfo.SingleEntryFilter stops at the first)
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) { return m.Mountpoint != abs, false })
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	byParent := map[int]*mountinfo.Info{}
	ids := map[int]bool{}
	for _, m := range ms {
		byParent[m.Parent] = m
		ids[m.ID] = true
	}
	// the lowest mount's parent is the mount dir itself lives on
	var stack []*mountinfo.Info
	for _, m := range ms {
		if !ids[m.Parent] {
			for n := m; n != nil; n = byParent[n.ID] {
				stack = append(stack, n)
			}
			break
		}
	}
	var out []*mountinfo.Info
	for _, m := range stack {
		if m.FSType == fstype {
			out = append(out, m)
		}
	}
	return out, nil
}

// mountedAs reports whether dir is the mount point of a file system of fstype.
func mountedAs(dir, fstype string) (bool, error) {
	stack, err := mountStack(dir, fstype)
	return len(stack) > 0, err
}

func stackIDs(stack []*mountinfo.Info) []int {
	ids := make([]int, len(stack))
	for i, m := range stack {
		ids[i] = m.ID
	}
	return ids
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
