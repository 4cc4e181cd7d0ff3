package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrBootTimeout is returned when the guest did not power off in time.
var ErrBootTimeout = errors.New("guest did not power off in time")

// Boot describes one QEMU run.
type Boot struct {
	Kernel  string        // vmlinuz
	Initrd  string        // newc cpio
	Append  string        // extra kernel arguments
	Memory  int           // MiB (default 1024)
	CPUs    int           // default 2
	Timeout time.Duration // default 3 minutes
	// Console, if set, also receives the console output as it comes.
	Console io.Writer
	// Shares are host directories exported to the guest with virtio-9p.
	Shares []Share
}

// Share is a host directory the guest mounts with
// "mount -t 9p -o trans=virtio,version=9p2000.L <Tag> <Guest>".
type Share struct {
	Tag      string // mount_tag (at most 31 bytes)
	Host     string // host directory
	Guest    string // where the guest's /init mounts it
	Writable bool   // default: read-only for the guest
}

// QEMUArgs is the qemu-system-x86_64 command line for b. TCG only: this
// machine's /dev/kvm is PVM-only and hangs stock kernels.
func (b Boot) QEMUArgs() []string {
	mem, cpus := b.Memory, b.CPUs
	if mem == 0 {
		mem = 1024
	}
	if cpus == 0 {
		cpus = 2
	}
	cmdline := "console=ttyS0 panic=-1 quiet"
	if b.Append != "" {
		cmdline += " " + b.Append
	}
	args := []string{
		// One host thread runs all vCPUs in turn. Under multi-threaded TCG
		// a vCPU could run a stale translation of kernel text that another
		// vCPU had just patched (static keys, text_poke_bp): an "Oops:
		// int3" panic on 6.12 twice, in sched_clock_cpu during boot
		// (2026-12-03) and in get_random_u32 in the BPF JIT (2026-12-02,
		// see -cpu below). The kernel patches its text whenever a static
		// key flips, which attaching BPF programs does too, so no guest
		// setting avoids it. With 2 host CPUs and three guests at once the
		// machine is busy either way; the guests still see 2 vCPUs.
		"-accel", "tcg,thread=single",
		// RDRAND (which TCG emulates from the host's getrandom) lets the
		// kernel's CRNG be ready before /init. Without it the CRNG became
		// ready tens of seconds into the tests, and the static key that
		// flip patches (crng_is_ready, text_poke_bp) raced with another
		// vCPU running get_random_u32 in the BPF JIT: an "Oops: int3"
		// panic on 6.12 under multi-threaded TCG (2026-12-02). /init
		// checks it (boot/crng-ready).
		"-cpu", "qemu64,+rdrand,+rdseed",
		"-smp", strconv.Itoa(cpus),
		"-m", strconv.Itoa(mem),
		"-nographic", "-no-reboot",
		"-nic", "none",
		"-kernel", b.Kernel,
		"-initrd", b.Initrd,
		"-append", cmdline,
	}
	for i, sh := range b.Shares {
		// security_model=none: the guest sees the host's owners and modes
		// (QEMU runs as root here); multidevs=remap keeps inode numbers
		// unique when the directory spans several host file systems.
		opt := fmt.Sprintf("local,id=fs%d,path=%s,mount_tag=%s,security_model=none,multidevs=remap", i, sh.Host, sh.Tag)
		if !sh.Writable {
			opt += ",readonly=on"
		}
		args = append(args, "-virtfs", opt)
	}
	return args
}

// syncBuffer is a bytes.Buffer safe for QEMU's writer goroutine and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Run boots the guest and returns its console output once QEMU exits. On
// timeout (or ctx cancellation) it kills QEMU by PID and returns
// ErrBootTimeout with whatever the console showed.
func (b Boot) Run(ctx context.Context) (string, error) {
	timeout := b.Timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	cmd := exec.Command("qemu-system-x86_64", b.QEMUArgs()...)
	// QEMU must not outlive this process (a go test timeout panics
	// without running the kill below).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var console syncBuffer
	var out io.Writer = &console
	if b.Console != nil {
		out = io.MultiWriter(&console, b.Console)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	cmd.Stdin = devnull
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start qemu: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return console.String(), fmt.Errorf("qemu: %w", err)
		}
		return console.String(), nil
	case <-timer.C:
	case <-ctx.Done():
	}
	// Only the QEMU process this call started, by its PID.
	_ = cmd.Process.Kill()
	<-done
	return console.String(), fmt.Errorf("%w (after %v, qemu pid %d killed)", ErrBootTimeout, timeout, cmd.Process.Pid)
}
