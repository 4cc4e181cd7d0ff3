package probe

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestMemoryLimitContainerView runs the probe in a cgroup v1 memory cgroup
// limited to 800Mi (the DaemonSet's limit), seen three ways: as on the host
// (the whole hierarchy mounted), as a podman container on cgroup v1 sees it
// (its private mount namespace has only its own cgroup mounted at
// /sys/fs/cgroup/memory while /proc/self/cgroup names the host's path), and
// with that cgroup bound on top of the hierarchy.
func TestMemoryLimitContainerView(t *testing.T) {
	requireRoot(t)
	if m := cgroups.Mode(); m != cgroups.Legacy && m != cgroups.Hybrid {
		t.Fatalf("this test needs the memory controller on cgroup v1 (this machine is hybrid): mode %v", m)
	}
	const limit = int64(800 << 20)
	own, err := cgroup1.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(own["memory"], fmt.Sprintf("kmesh-test-mem-%d-%s", os.Getpid(), randSuffix()))
	cg, err := cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &[]int64{limit}[0]}},
		cgroup1.WithHiearchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory)))
	if err != nil {
		t.Fatalf("create memory cgroup %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := cg.Delete(); err != nil {
			t.Errorf("delete memory cgroup %s: %v", path, err)
		}
	})
	mnt, err := memoryMount()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, path)

	for _, tc := range []struct {
		bind   string
		detail []string
	}{
		{"", []string{"800 MiB (cgroup v1 memory " + path + ")"}},
		{"container", []string{"800 MiB (cgroup v1 memory at the mount root " + mnt + ": /proc/self/cgroup names " + path + ", which is not under the mount"}},
		{"stacked", []string{"800 MiB (cgroup v1 memory at the mount root " + mnt + ": /proc/self/cgroup names " + path}},
	} {
		t.Run(map[string]string{"": "host view", "container": "container view", "stacked": "cgroup bound on the hierarchy"}[tc.bind], func(t *testing.T) {
			r := runChild(t, child{kind: "env", env: map[string]string{childMemcg: dir, childMemBind: tc.bind, childScratch: t.TempDir()}})
			if !strings.Contains(r.OwnCgroup, ":memory:"+path+"\n") {
				t.Fatalf("the child is not in %s:\n%s", path, r.OwnCgroup)
			}
			// the library's own lookup fails in the container's view: the symptom
			if tc.bind != "" && !strings.Contains(r.PidPathErr, "cgroup deleted") {
				t.Errorf("cgroup1.Load(PidPath) in the %s view: %q, want cgroup deleted", tc.bind, r.PidPathErr)
			}
			if tc.bind == "" && r.PidPathErr != "" {
				t.Errorf("cgroup1.Load(PidPath) on the host view: %s", r.PidPathErr)
			}
			c := r.check(t, "env.memory_limit")
			wantStatus(t, c, Supported, tc.detail...)
			if r.Environment.MemoryLimit != uint64(limit) {
				t.Errorf("memory limit = %d, want %d", r.Environment.MemoryLimit, limit)
			}
		})
	}
}
