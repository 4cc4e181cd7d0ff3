package loader

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// mountDir is an empty directory whose mounts are all removed at the end.
func mountDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "m")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 16; i++ {
			if unix.Unmount(dir, unix.UMOUNT_NOFOLLOW) != nil {
				return
			}
		}
	})
	return dir
}

func stackOf(t *testing.T, dir, fstype string) []uint64 {
	t.Helper()
	stack, err := mountStack(dir, fstype)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, len(stack))
	for i, m := range stack {
		ids[i] = uint64(m.ID)
	}
	return ids
}

// TestEnsureMountRace: kmesh mounters that start at the same moment leave
// exactly one mount, and exactly one of them reports it as its own (the one
// that uninstall may remove): they take turns on the parent directory's
// lock. mount(2) alone stacks a mount per racer. A racing agent that is not
// kmesh is settled after the fact: TestSettleStack walks those orders.
func TestEnsureMountRace(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		fstype        string
		rounds, racer int
	}{{"bpf", 25, 6}, {"cgroup2", 5, 4}} {
		t.Run(c.fstype, func(t *testing.T) {
			stacked := 0
			for round := 0; round < c.rounds; round++ {
				dir := mountDir(t)
				log, hook := test.NewNullLogger()
				var wg sync.WaitGroup
				start := make(chan struct{})
				mine := make([]bool, c.racer)
				errs := make([]error, c.racer)
				for i := range mine {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						mine[i], errs[i] = ensureMount(c.fstype, dir, log)
					}()
				}
				close(start)
				wg.Wait()
				owners := 0
				for i := range mine {
					if errs[i] != nil {
						t.Fatalf("round %d: racer %d: %v", round, i, errs[i])
					}
					if mine[i] {
						owners++
					}
				}
				if ids := stackOf(t, dir, c.fstype); len(ids) != 1 || owners != 1 {
					t.Fatalf("round %d: %d racers left mounts %v at %s, %d of them claim one; want one mount, one owner", round, c.racer, ids, dir, owners)
				}
				for _, e := range hook.AllEntries() {
					if strings.Contains(e.Message, "using its mount") {
						stacked++
					}
				}
			}
			// with the lock, none (a racer that mounted over another took its mount back)
			t.Logf("%d rounds of %d racers: %d stacked mounts settled", c.rounds, c.racer, stacked)
		})
	}
}

// TestSettleStack walks the orders a race can take, one step at a time.
func TestSettleStack(t *testing.T) {
	requireRoot(t)
	t.Run("lost", func(t *testing.T) {
		// another agent mounted first: kmesh's mount on top goes again
		dir := mountDir(t)
		other, err := mountClassic("bpf", dir)
		if err != nil {
			t.Fatal(err)
		}
		id, err := mountAt("bpf", dir)
		if err != nil {
			t.Fatal(err)
		}
		if ids := stackOf(t, dir, "bpf"); len(ids) != 2 || ids[0] != other || ids[1] != id {
			t.Fatalf("stack %v, want [%d %d]", ids, other, id)
		}
		log, _ := test.NewNullLogger()
		if mine, err := settleStack("bpf", dir, id, log); err != nil || mine {
			t.Fatalf("settle above another mount: mine=%v err=%v, want false, nil", mine, err)
		}
		if ids := stackOf(t, dir, "bpf"); len(ids) != 1 || ids[0] != other {
			t.Fatalf("after settling: %v, want only the other agent's mount %d", ids, other)
		}
	})
	t.Run("won", func(t *testing.T) {
		// a second kmesh mounted over ours: it removes its own, ours stays
		dir := mountDir(t)
		first, err := mountAt("bpf", dir)
		if err != nil {
			t.Fatal(err)
		}
		second, err := mountAt("bpf", dir)
		if err != nil {
			t.Fatal(err)
		}
		log, _ := test.NewNullLogger()
		if mine, err := settleStack("bpf", dir, second, log); err != nil || mine {
			t.Fatalf("settle of the upper mount: mine=%v err=%v, want false, nil", mine, err)
		}
		if mine, err := settleStack("bpf", dir, first, log); err != nil || !mine {
			t.Fatalf("settle of the lower mount: mine=%v err=%v, want true, nil", mine, err)
		}
		if ids := stackOf(t, dir, "bpf"); len(ids) != 1 || ids[0] != first {
			t.Fatalf("after settling: %v, want [%d]", ids, first)
		}
	})
	t.Run("covered", func(t *testing.T) {
		// an agent that does not settle mounted over ours and keeps it:
		// kmesh does not claim either mount, and says so
		dir := mountDir(t)
		ours, err := mountAt("bpf", dir)
		if err != nil {
			t.Fatal(err)
		}
		foreign, err := mountClassic("bpf", dir)
		if err != nil {
			t.Fatal(err)
		}
		log, hook := test.NewNullLogger()
		if mine, err := settleStack("bpf", dir, ours, log); err != nil || mine {
			t.Fatalf("settle under a foreign mount: mine=%v err=%v, want false, nil", mine, err)
		}
		if ids := stackOf(t, dir, "bpf"); len(ids) != 2 || ids[0] != ours || ids[1] != foreign {
			t.Fatalf("after settling: %v, want both left: [%d %d]", ids, ours, foreign)
		}
		if e := hook.LastEntry(); e == nil || e.Level != logrus.WarnLevel || !strings.Contains(e.Message, "mounted over kmesh's mount") {
			t.Fatalf("want a warning about the covering mount, got %+v", e)
		}
	})
	t.Run("gone", func(t *testing.T) {
		// kmesh's mount was removed before it settled: an error, not a claim
		dir := mountDir(t)
		id, err := mountAt("bpf", dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Unmount(dir, 0); err != nil {
			t.Fatal(err)
		}
		log, _ := test.NewNullLogger()
		if mine, err := settleStack("bpf", dir, id, log); !errors.Is(err, errMountGone) || mine {
			t.Fatalf("settle of a vanished mount: mine=%v err=%v, want an error naming it", mine, err)
		}
	})
	t.Run("stacked-before", func(t *testing.T) {
		// a stack left by an earlier race: used as it is, with a warning
		dir := mountDir(t)
		for i := 0; i < 2; i++ {
			if _, err := mountClassic("bpf", dir); err != nil {
				t.Fatal(err)
			}
		}
		log, hook := test.NewNullLogger()
		if mine, err := ensureMount("bpf", dir, log); err != nil || mine {
			t.Fatalf("ensureMount on a stack: mine=%v err=%v, want false, nil", mine, err)
		}
		if e := hook.LastEntry(); e == nil || e.Level != logrus.WarnLevel || !strings.Contains(e.Message, "stacked") {
			t.Fatalf("want a warning about the stack, got %+v", e)
		}
		if ids := stackOf(t, dir, "bpf"); len(ids) != 2 {
			t.Fatalf("ensureMount changed the stack: %v", ids)
		}
	})
}

// TestEnsureMountInterleaved puts another agent's mount or unmount, by
// util-linux's mount(8) and umount(8), between ensureMount's steps, where
// the flock kmesh mounters share does not reach: each retry branch runs,
// with the new mount API and with mount(2) (where fsopen is filtered).
func TestEnsureMountInterleaved(t *testing.T) {
	requireRoot(t)
	agent := func(t *testing.T, args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("other agent: %v: %v: %s", args, err, out)
		}
	}
	retries := func(hook *test.Hook) []string {
		var out []string
		for _, e := range hook.AllEntries() {
			if strings.Contains(e.Message, "looking again") {
				out = append(out, fmt.Sprint(e.Data[logrus.ErrorKey]))
			}
		}
		return out
	}
	logged := func(hook *test.Hook, msg string) bool {
		for _, e := range hook.AllEntries() {
			if strings.Contains(e.Message, msg) {
				return true
			}
		}
		return false
	}
	for _, classic := range []bool{false, true} {
		api := map[bool]string{false: "fsmount", true: "mount2"}[classic]
		t.Run(api+"/cgroup2-mounted-before-kmesh", func(t *testing.T) {
			// another agent's mount lands between the look and kmesh's
			// mount: mount(2) refuses the cgroup2 superblock twice on one
			// mount point (EBUSY) and kmesh looks again; move_mount
			// stacks it and kmesh removes its own. Either way the other
			// agent's mount is used and not claimed.
			dir := mountDir(t)
			var other []uint64
			log, hook := test.NewNullLogger()
			mt := mounter{log: log, classic: classic, between: func(step string, attempt int) {
				if step == "mount" && attempt == 0 {
					agent(t, "mount", "-t", "cgroup2", "none", dir)
					other = stackOf(t, dir, "cgroup2")
				}
			}}
			mine, err := mt.ensure("cgroup2", dir)
			if err != nil || mine {
				t.Fatalf("ensure: mine=%v err=%v, want the other agent's mount used (false, nil)", mine, err)
			}
			if ids := stackOf(t, dir, "cgroup2"); len(ids) != 1 || len(other) != 1 || ids[0] != other[0] {
				t.Fatalf("stack %v, want only the other agent's mount %v", ids, other)
			}
			r := retries(hook)
			if classic && (len(r) != 1 || !strings.Contains(r[0], "a mount appeared after the check: device or resource busy")) {
				t.Fatalf("retries logged %q, want one naming EBUSY", r)
			}
			if !classic && (len(r) != 0 || !logged(hook, "using its mount")) {
				t.Fatalf("retries logged %q; want none, and kmesh's stacked mount removed", r)
			}
		})
		// kmesh's new mount vanishes before it settles: once, and kmesh
		// mounts again and claims that one; every time, and kmesh gives up
		// after a bounded number of tries with an error that says why,
		// leaving nothing mounted
		for _, always := range []bool{false, true} {
			name := map[bool]string{false: "bpf-unmounted-before-settling", true: "bpf-unmounted-every-time"}[always]
			t.Run(api+"/"+name, func(t *testing.T) {
				dir := mountDir(t)
				log, hook := test.NewNullLogger()
				mounts := 0
				mt := mounter{log: log, classic: classic, between: func(step string, attempt int) {
					if step == "settle" {
						if mounts++; always || attempt == 0 {
							agent(t, "umount", dir)
						}
					}
				}}
				mine, err := mt.ensure("bpf", dir)
				wantMounts, wantStack := 2, 1
				if always {
					wantMounts, wantStack = mountAttempts, 0
					if !errors.Is(err, errMountGone) || mine || !strings.Contains(err.Error(), "gave up after 5 attempts") ||
						!strings.Contains(err.Error(), dir) {
						t.Fatalf("ensure: mine=%v err=%v, want an error naming %s, the attempts and the vanished mount", mine, err, dir)
					}
				} else if err != nil || !mine {
					t.Fatalf("ensure: mine=%v err=%v, want kmesh's second mount (true, nil)", mine, err)
				}
				if ids := stackOf(t, dir, "bpf"); len(ids) != wantStack || mounts != wantMounts {
					t.Fatalf("stack %v after %d mounts by kmesh, want %d mount(s) after %d", ids, mounts, wantStack, wantMounts)
				}
				r := retries(hook)
				if len(r) != wantMounts-1 {
					t.Fatalf("retries logged %q, want %d", r, wantMounts-1)
				}
				for _, e := range r {
					if !strings.Contains(e, "no longer at its mount point") {
						t.Fatalf("retry logged %q, want it to name the vanished mount", e)
					}
				}
			})
		}
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if unix.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
}
