package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Uninstall detaches kmesh's programs, removes its pins and unmounts what the
// loader mounted. It is idempotent and goes on past errors, returning them all.
func Uninstall(cfg Config) error {
	cfg.defaults()
	log := cfg.Log.WithField("subsys", "loader")
	st, stErr := readState(cfg.statePath())
	var errs []error

	// Cgroup links first, so that no new socket enters a socket map, then
	// the programs attached to those maps.
	links, _ := filepath.Glob(filepath.Join(cfg.pinRoot(), "links", "*"))
	for _, p := range links {
		errs = append(errs, detachLinkPin(p)...)
		log.WithField("pin", p).Info("detached")
	}
	progs, _ := filepath.Glob(filepath.Join(cfg.pinRoot(), "progs", "*"))
	for _, p := range progs {
		errs = append(errs, detachProgPin(cfg, p)...)
		log.WithField("pin", p).Info("detached")
	}
	maps, _ := filepath.Glob(filepath.Join(cfg.pinRoot(), "maps", "*"))
	for _, p := range maps {
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("remove map pin %s: %w", p, err))
		}
	}
	for _, p := range []string{cfg.statePath(), filepath.Join(cfg.pinRoot(), "maps"), filepath.Join(cfg.pinRoot(), "links"), filepath.Join(cfg.pinRoot(), "progs"), cfg.pinRoot()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	if stErr == nil {
		cg := st.Cgroup2Path
		if cg == "" {
			cg = cfg.Cgroup2Path
		}
		if st.MountedCgroup2 {
			errs = append(errs, unmount(cg, "cgroup2", log)...)
		}
		if st.MountedBPFFS {
			errs = append(errs, unmount(cfg.BPFFSPath, "bpf", log)...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	log.Info("uninstalled")
	return nil
}

// detachLinkPin detaches a pinned link and removes its pin.
func detachLinkPin(p string) []error {
	l, err := link.LoadPinnedLink(p, nil)
	if err != nil {
		return []error{fmt.Errorf("open pinned link %s: %w", p, err)}
	}
	defer l.Close()
	var errs []error
	// Detach now: dropping the last reference detaches too, but the kernel
	// frees an unpinned link only after an RCU grace period and a work
	// item, so until then the program would still run (seen on 5.10).
	// LINK_DETACH needs 5.9; before that the last reference is the way.
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		errs = append(errs, fmt.Errorf("detach link %s: %w", p, err))
	}
	if err := l.Unpin(); err != nil {
		errs = append(errs, fmt.Errorf("unpin link %s: %w", p, err))
	}
	return errs
}

// detachProgPin detaches a pinned map-attached program (sk_msg, the only
// kind the loader map-attaches) from the pinned socket maps it is attached
// to and removes its pin. Which map that is needs no record: detaching from
// a socket map the program is not attached to fails and changes nothing,
// so each pinned sockhash and sockmap is tried. A program on no pinned map
// (its map is gone) has nothing left to detach.
func detachProgPin(cfg Config, p string) []error {
	prog, err := ebpf.LoadPinnedProgram(p, nil)
	if err != nil {
		return []error{fmt.Errorf("open pinned program %s: %w", p, err)}
	}
	defer prog.Close()
	pins, _ := filepath.Glob(filepath.Join(cfg.pinRoot(), "maps", "*"))
	for _, pin := range pins {
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil && (info.Type == ebpf.SockHash || info.Type == ebpf.SockMap) {
			_ = link.RawDetachProgram(link.RawDetachProgramOptions{Target: m.FD(), Program: prog, Attach: ebpf.AttachSkMsgVerdict})
		}
		m.Close()
	}
	if err := os.Remove(p); err != nil {
		return []error{fmt.Errorf("unpin program %s: %w", p, err)}
	}
	return nil
}

func unmount(dir, fstype string, log logrus.FieldLogger) []error {
	has, err := mountedAs(dir, fstype)
	if err != nil {
		return []error{err}
	}
	if !has {
		return nil
	}
	if err := unix.Unmount(dir, 0); err != nil {
		return []error{fmt.Errorf("unmount %s: %w", dir, err)}
	}
	log.WithFields(logrus.Fields{"path": dir, "fstype": fstype}).Info("unmounted")
	return nil
}
