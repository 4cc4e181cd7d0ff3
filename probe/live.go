package probe

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Live probes test the running kernel by creating maps and loading programs.
// They always act on the kernel this process runs on, whatever the host root.

type progProbe struct {
	name string
	pt   ebpf.ProgramType
}

var liveProgTypes = []progProbe{
	{"prog_type.cgroup_sock_addr", ebpf.CGroupSockAddr},
	{"prog_type.sock_ops", ebpf.SockOps},
	{"prog_type.sk_msg", ebpf.SkMsg},
}

type mapProbe struct {
	name string
	mt   ebpf.MapType
}

var liveMapTypes = []mapProbe{
	{"map_type.hash", ebpf.Hash},
	{"map_type.sockhash", ebpf.SockHash},
	{"map_type.hash_of_maps", ebpf.HashOfMaps},
	{"map_type.sk_storage", ebpf.SkStorage},
	{"map_type.ringbuf", ebpf.RingBuf},
}

type helperProbe struct {
	name string
	pt   ebpf.ProgramType
	fn   asm.BuiltinFunc
}

// The helpers the programs need, per program type.
var liveHelpers = []helperProbe{
	{"helper.cgroup_sock_addr.get_netns_cookie", ebpf.CGroupSockAddr, asm.FnGetNetnsCookie},
	{"helper.cgroup_sock_addr.sk_storage_get", ebpf.CGroupSockAddr, asm.FnSkStorageGet},
	{"helper.cgroup_sock_addr.get_prandom_u32", ebpf.CGroupSockAddr, asm.FnGetPrandomU32},
	{"helper.cgroup_sock_addr.setsockopt", ebpf.CGroupSockAddr, asm.FnSetsockopt},
	{"helper.sock_ops.sock_hash_update", ebpf.SockOps, asm.FnSockHashUpdate},
	{"helper.sock_ops.get_netns_cookie", ebpf.SockOps, asm.FnGetNetnsCookie},
	{"helper.sk_msg.msg_redirect_hash", ebpf.SkMsg, asm.FnMsgRedirectHash},
	{"helper.sk_msg.sk_storage_get", ebpf.SkMsg, asm.FnSkStorageGet},
}

func probeLive(cgroup2Mount string, kernelBTF *btf.Spec) []Check {
	var checks []Check
	for _, p := range liveProgTypes {
		checks = append(checks, liveCheck(p.name, features.HaveProgramType(p.pt)))
	}
	for _, p := range liveMapTypes {
		checks = append(checks, liveCheck(p.name, features.HaveMapType(p.mt)))
	}
	for _, p := range liveHelpers {
		checks = append(checks, liveCheck(p.name, features.HaveProgramHelper(p.pt, p.fn)))
	}
	checks = append(checks, liveCheck("cgroup.attach", probeCgroupAttach(cgroup2Mount)))
	checks = append(checks, liveCheck("kfunc.cgroup_sock_addr", probeKfuncSockAddr(kernelBTF)))
	return checks
}

// probeKfuncSockAddr loads a cgroup/connect_unix program that calls two
// vmlinux kfuncs (bpf_cast_to_kern_ctx, bpf_sock_addr_set_sun_path) by their
// BTF IDs: if the verifier accepts it, kfunc calls work from cgroup sock_addr
// programs, which is how enhanced mode hands sockets to kmesh.ko's kfuncs.
func probeKfuncSockAddr(spec *btf.Spec) error {
	if spec == nil {
		return fmt.Errorf("probe kfunc calls: no kernel BTF: %w", ErrUnsupported)
	}
	id := func(name string) (asm.Instruction, error) {
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err != nil {
			return asm.Instruction{}, fmt.Errorf("find kfunc %s: %w", name, errors.Join(err, ErrUnsupported))
		}
		tid, err := spec.TypeID(fn)
		if err != nil {
			return asm.Instruction{}, err
		}
		return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(tid)}, nil
	}
	castCall, err := id("bpf_cast_to_kern_ctx")
	if err != nil {
		return err
	}
	setCall, err := id("bpf_sock_addr_set_sun_path")
	if err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.CGroupSockAddr,
		AttachType: ebpf.AttachCgroupUnixConnect,
		License:    "GPL",
		Instructions: asm.Instructions{
			castCall,                                 // r0 = kernel context of r1
			asm.Mov.Reg(asm.R1, asm.R0),              // sa_kern
			asm.StoreImm(asm.R10, -8, 'k', asm.Word), // "k" on the stack
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 1), // sun_path__sz
			setCall,
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		},
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) || errors.Is(err, unix.EINVAL) {
			// an older kernel: no unix attach types or no kfuncs for this hook
			return fmt.Errorf("load a cgroup sock_addr program calling kfuncs: %w: %w", ErrUnsupported, err)
		}
		return fmt.Errorf("load a cgroup sock_addr program calling kfuncs: %w", err)
	}
	return prog.Close()
}

func liveCheck(name string, err error) Check {
	c := fromErr(name, err, "loaded by the running kernel")
	if c.Status == NotPermitted {
		c.Fix = "run privileged (CAP_BPF and CAP_SYS_ADMIN, or --privileged)"
	}
	return c
}

// probeCgroupAttach loads a cgroup/connect4 program that allows everything and
// attaches it to a fresh, empty child cgroup, so no process is affected.
func probeCgroupAttach(cgroup2Mount string) (err error) {
	mnt := cgroup2Mount
	if mnt == "" {
		dir, cleanup, err := tempMount("cgroup2", "kmesh-probe-cg-")
		if err != nil {
			return fmt.Errorf("mount cgroup2 for the attach probe: %w", err)
		}
		defer cleanup()
		mnt = dir
	}
	child := filepath.Join(mnt, "kmesh-probe-"+randSuffix())
	if err := os.Mkdir(child, 0o755); err != nil {
		return fmt.Errorf("create probe cgroup: %w", err)
	}
	defer func() {
		if rmErr := os.Remove(child); rmErr != nil && err == nil {
			err = fmt.Errorf("remove probe cgroup: %w", rmErr)
		}
	}()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.CGroupSockAddr,
		AttachType: ebpf.AttachCGroupInet4Connect,
		License:    "Apache-2.0",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("load cgroup/connect4 program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: child, Attach: ebpf.AttachCGroupInet4Connect, Program: prog})
	if err != nil {
		return fmt.Errorf("attach cgroup/connect4: %w", err)
	}
	if err := l.Close(); err != nil {
		return fmt.Errorf("detach cgroup/connect4: %w", err)
	}
	return nil
}

// tempMount mounts a pseudo file system of type fstype on a new temporary
// directory and returns a function that unmounts and removes it.
func tempMount(fstype, pattern string) (string, func(), error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, fmt.Errorf("create mount point: %w", err)
	}
	if err := unix.Mount("none", dir, fstype, 0, ""); err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("mount %s on %s: %w", fstype, dir, err)
	}
	return dir, func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = os.Remove(dir)
	}, nil
}

func randSuffix() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Sprint(os.Getpid())
	}
	return hex.EncodeToString(b[:])
}
