package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// ErrNoSockoptCookie: the kernel has no SO_NETNS_COOKIE (Linux < 5.14).
var ErrNoSockoptCookie = errors.New("SO_NETNS_COOKIE not supported by this kernel (Linux < 5.14)")

// cookieProbePort is the destination of the probe's UDP connect
// (127.0.0.1, the discard port): a UDP connect sends nothing, and only the
// probe's own socket is recorded.
const cookieProbePort = 9

// CookieFromBPF returns the cookie of the network namespace at path the way
// the connect programs see it, for kernels without SO_NETNS_COOKIE (5.7 to
// 5.13): a cgroup/connect4 program that records bpf_get_netns_cookie for one
// socket (matched by its SO_COOKIE, so no other socket is touched and every
// connect is allowed) is attached to this process's own cgroup for the
// duration of one UDP connect from inside the namespace, then detached.
// Needs CAP_SYS_ADMIN (or CAP_BPF + CAP_NET_ADMIN) and cgroup2.
func CookieFromBPF(path string) (uint64, error) {
	cg, cleanup, err := ownCgroup2()
	if err != nil {
		return 0, fmt.Errorf("read netns cookie with BPF: %w", err)
	}
	defer cleanup()
	var cookie uint64
	err = Do(path, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("create socket: %w", err)
		}
		defer unix.Close(fd)
		sk, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		if err != nil {
			return fmt.Errorf("read SO_COOKIE: %w", err)
		}
		cookie, err = recordCookie(cg, sk, func() error {
			// The hook runs before routing: the connect may fail (no
			// loopback in the namespace) after the program recorded.
			_ = unix.Connect(fd, &unix.SockaddrInet4{Port: cookieProbePort, Addr: [4]byte{127, 0, 0, 1}})
			return nil
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read netns cookie of %s with BPF: %w", path, err)
	}
	return cookie, nil
}

// recordCookie attaches the recording program for socket cookie sk to the
// cgroup directory cg, runs connect and returns what the program recorded.
func recordCookie(cg string, sk uint64, connect func() error) (uint64, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "km_ns_probe", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return 0, fmt.Errorf("create map: %w", err)
	}
	defer m.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "km_ns_probe",
		Type:         ebpf.CGroupSockAddr,
		AttachType:   ebpf.AttachCGroupInet4Connect,
		License:      "Dual BSD/GPL",
		Instructions: cookieProgram(m.FD(), sk),
	})
	if err != nil {
		return 0, fmt.Errorf("load program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupInet4Connect, Program: prog})
	if err != nil {
		return 0, fmt.Errorf("attach to %s: %w", cg, err)
	}
	err = connect()
	if cerr := l.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("detach from %s: %w", cg, cerr)
	}
	if err != nil {
		return 0, err
	}
	var c uint64
	if err := m.Lookup(uint32(0), &c); err != nil {
		return 0, fmt.Errorf("read recorded cookie: %w", err)
	}
	if c == 0 {
		return 0, fmt.Errorf("the program did not see the connect: is this process's cgroup %s the one its sockets are charged to?", cg)
	}
	return c, nil
}

// cookieProgram: if bpf_get_socket_cookie(ctx) == sk, store
// bpf_get_netns_cookie(ctx) at index 0 of the map; always allow.
func cookieProgram(mapFD int, sk uint64) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetSocketCookie.Call(),
		asm.LoadImm(asm.R1, int64(sk), asm.DWord),
		asm.JNE.Reg(asm.R0, asm.R1, "out"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetNetnsCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.StoreImm(asm.RFP, -12, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -12),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("out"),
		asm.Return(),
	}
}

// ownCgroup2 returns the directory of this process's cgroup v2 group, under
// a cgroup2 mount whose root contains it (mounting cgroup2 privately when
// there is none, e.g. on a hybrid host inside a container).
func ownCgroup2() (string, func(), error) {
	rel, err := cgroup2.PidGroupPath(os.Getpid())
	if err != nil {
		return "", nil, fmt.Errorf("find this process's cgroup v2 group: %w", err)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2"))
	if err != nil {
		return "", nil, fmt.Errorf("list cgroup2 mounts: %w", err)
	}
	for _, m := range mounts {
		root := strings.TrimSuffix(m.Root, "/")
		if rel == root || strings.HasPrefix(rel, root+"/") {
			dir := filepath.Join(m.Mountpoint, strings.TrimPrefix(rel, root))
			if _, err := os.Stat(dir); err == nil {
				return dir, func() {}, nil
			}
		}
	}
	mnt, err := os.MkdirTemp("", "kmesh-netns-cg-")
	if err != nil {
		return "", nil, fmt.Errorf("create cgroup2 mount point: %w", err)
	}
	if err := unix.Mount("none", mnt, "cgroup2", 0, ""); err != nil {
		os.Remove(mnt)
		return "", nil, fmt.Errorf("mount cgroup2 on %s: %w", mnt, err)
	}
	cleanup := func() {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		_ = os.Remove(mnt)
	}
	return filepath.Join(mnt, rel), cleanup, nil
}
