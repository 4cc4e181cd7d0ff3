package builder

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// ErrVerifier marks an object the kernel's verifier rejected.
var ErrVerifier = errors.New("verifier rejected the object")

// VerifyReport is the outcome of loading one object into the kernel.
type VerifyReport struct {
	Object   string   `json:"object"`
	Programs []string `json:"programs"`
	LoadMS   float64  `json:"load_ms"`
	OK       bool     `json:"ok"`
	Error    string   `json:"error,omitempty"`
	// VerifierLog holds the relevant lines of the verifier's log on failure.
	VerifierLog []string `json:"verifier_log,omitempty"`
}

// VerifyObjects loads every object in dir into the running kernel (maps
// created, every program through the verifier) and releases it again.
// Nothing is attached or pinned. It returns a report per object and an
// error wrapping ErrVerifier for any rejected one.
func VerifyObjects(dir string) ([]VerifyReport, error) {
	objs, err := filepath.Glob(filepath.Join(dir, "*.o"))
	if err != nil || len(objs) == 0 {
		return nil, fmt.Errorf("verify objects in %s: no objects", dir)
	}
	sort.Strings(objs)
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (64 KiB by
	// default there); a no-op where memory cgroups account them.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("verify objects: lift RLIMIT_MEMLOCK: %w", err)
	}
	var reports []VerifyReport
	var errs []error
	for _, obj := range objs {
		r := verifyOne(obj)
		if !r.OK {
			errs = append(errs, fmt.Errorf("verify %s: %w: %s", r.Object, ErrVerifier, r.Error))
		}
		reports = append(reports, r)
	}
	return reports, errors.Join(errs...)
}

func verifyOne(path string) VerifyReport {
	r := VerifyReport{Object: strings.TrimSuffix(filepath.Base(path), ".o")}
	start := time.Now()
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	for n := range spec.Programs {
		r.Programs = append(r.Programs, n)
	}
	// The verdict does not depend on map sizes; production sizes would
	// preallocate tens of MiB for nothing (the daemon creates the real maps).
	for _, m := range spec.Maps {
		switch m.Type {
		case ebpf.Hash, ebpf.Array, ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUHash, ebpf.LRUCPUHash:
			m.MaxEntries = min(m.MaxEntries, 16)
		}
	}
	sort.Strings(r.Programs)
	coll, err := ebpf.NewCollection(spec)
	r.LoadMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		r.Error = firstLine(err.Error())
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			r.VerifierLog = relevantLines(ve.Log, 12)
		}
		return r
	}
	coll.Close()
	r.OK = true
	return r
}

// relevantLines keeps the end of a verifier log, where the rejection is
// explained, dropping empty lines.
func relevantLines(log []string, n int) []string {
	var out []string
	for _, l := range log {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
