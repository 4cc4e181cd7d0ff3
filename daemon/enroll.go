package daemon

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/daemon/loader"
	kmaps "kmesh.dev/kmesh/daemon/maps"
	"kmesh.dev/kmesh/daemon/netns"
)

// ErrBadRef marks a namespace reference the daemon cannot use (relative,
// too long, or not a network namespace).
var ErrBadRef = errors.New("invalid network namespace reference")

// EnrolledNetns is one enrolled namespace.
type EnrolledNetns struct {
	// Ref is the name or path it was enrolled by; empty when unknown (an
	// entry of a daemon version that did not record it).
	Ref    string `json:"ref,omitempty"`
	Cookie uint64 `json:"cookie"`
}

// Enroll puts a network namespace under kmesh's management. ref is a name
// under /run/netns or an absolute path. When km_enrolled is full, entries
// of namespaces that are gone are pruned and the enrolment tried again.
func (d *Daemon) Enroll(ref string) (EnrolledNetns, error) {
	if strings.Contains(ref, "/") && !filepath.IsAbs(ref) {
		return EnrolledNetns{}, fmt.Errorf("enroll %s: a path must be absolute (the daemon's working directory is not the caller's): %w", ref, ErrBadRef)
	}
	if len(ref) > refSize {
		return EnrolledNetns{}, fmt.Errorf("enroll: reference of %d bytes, more than %d: %w", len(ref), refSize, ErrBadRef)
	}
	p, err := netns.Path(ref)
	if err != nil {
		return EnrolledNetns{}, fmt.Errorf("enroll: %w", err)
	}
	c, err := netns.Cookie(p)
	if err != nil {
		return EnrolledNetns{}, fmt.Errorf("enroll %s: %w", ref, err)
	}
	d.enrollMu.Lock()
	defer d.enrollMu.Unlock()
	err = d.maps.Enroll(c)
	if errors.Is(err, unix.E2BIG) { // km_enrolled is full
		if n := d.pruneLocked("enroll"); n > 0 {
			err = d.maps.Enroll(c)
		}
	}
	if err != nil {
		return EnrolledNetns{}, fmt.Errorf("enroll %s: %w", ref, err)
	}
	if err := d.refs.put(c, ref); err != nil {
		d.log.WithFields(logrus.Fields{"netns": ref, "cookie": c}).WithError(err).Warn(
			"could not record the namespace's reference: a restarted daemon lists it without one and cannot tell when it is gone")
	}
	// Same-node acceleration takes connections to these addresses from the
	// first one; what this misses (addresses added later) it learns as
	// sockets establish, so a failure here costs only that.
	if addrs, err := netns.Addrs(p); err != nil {
		d.log.WithFields(logrus.Fields{"netns": ref}).WithError(err).Warn("could not list the namespace's addresses; same-node acceleration learns them from its connections")
	} else if err := d.maps.LearnLocalIPs(c, addrs); err != nil {
		d.log.WithFields(logrus.Fields{"netns": ref}).WithError(err).Warn("could not record the namespace's addresses; same-node acceleration learns them from its connections")
	}
	d.mu.Lock()
	d.enrolled[c] = ref
	d.mu.Unlock()
	d.log.WithFields(logrus.Fields{"netns": ref, "cookie": c}).Info("namespace enrolled")
	return EnrolledNetns{Ref: ref, Cookie: c}, nil
}

// Unenroll releases a namespace: its new connections are left alone. It
// reports whether the namespace was enrolled (releasing one that is not is
// not an error: a CNI DEL may come twice).
func (d *Daemon) Unenroll(ref string) (bool, error) {
	if strings.Contains(ref, "/") && !filepath.IsAbs(ref) {
		return false, fmt.Errorf("unenroll %s: a path must be absolute (the daemon's working directory is not the caller's): %w", ref, ErrBadRef)
	}
	p, err := netns.Path(ref)
	if err != nil {
		return false, fmt.Errorf("unenroll: %w (a namespace that is gone is released by its cookie, --cookie, or by itself within the check interval)", err)
	}
	c, err := netns.Cookie(p)
	if err != nil {
		return false, fmt.Errorf("unenroll %s: %w", ref, err)
	}
	return d.UnenrollCookie(c, ref)
}

// UnenrollCookie releases the namespace with this cookie, also one that no
// longer exists. ref only names it in the log.
func (d *Daemon) UnenrollCookie(c uint64, ref string) (bool, error) {
	d.enrollMu.Lock()
	defer d.enrollMu.Unlock()
	return d.unenrollLocked(c, ref, "")
}

// unenrollLocked is UnenrollCookie for a caller holding enrollMu; reason,
// when set, says why the daemon released it by itself.
func (d *Daemon) unenrollLocked(c uint64, ref, reason string) (bool, error) {
	was, err := d.maps.Enrolled(c)
	if err != nil {
		return false, fmt.Errorf("unenroll %s: %w", ref, err)
	}
	if err := d.maps.Unenroll(c); err != nil {
		return false, fmt.Errorf("unenroll %s: %w", ref, err)
	}
	if err := d.refs.del(c); err != nil {
		d.log.WithFields(logrus.Fields{"netns": ref, "cookie": c}).WithError(err).Warn("could not remove the namespace's recorded reference")
	}
	d.mu.Lock()
	delete(d.enrolled, c)
	d.mu.Unlock()
	f := logrus.Fields{"netns": ref, "cookie": c, "was_enrolled": was}
	if reason != "" {
		d.log.WithFields(f).WithField("reason", reason).Info("enrolled namespace is gone: unenrolled")
	} else {
		d.log.WithFields(f).Info("namespace unenrolled")
	}
	return was, nil
}

// pruneEnrolledEvery releases enrolled namespaces that are gone, at start
// and then every interval (none when interval is negative), until ctx ends.
// A namespace is gone when the reference it was enrolled by no longer
// exists, is no longer a network namespace, or names another one: CRI
// runtimes remove a pod's /run/netns bind mount when its sandbox goes, and
// a /proc/PID reference goes with its process. Without this, every pod that
// ever ran would keep an entry until km_enrolled (4096) is full.
func (d *Daemon) pruneEnrolledEvery(ctx context.Context, interval time.Duration) {
	d.pruneEnrolled("start")
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.pruneEnrolled("check")
		}
	}
}

func (d *Daemon) pruneEnrolled(phase string) int {
	d.enrollMu.Lock()
	defer d.enrollMu.Unlock()
	return d.pruneLocked(phase)
}

// pruneLocked releases the enrolled namespaces that are gone; the caller
// holds enrollMu. Entries without a recorded reference are kept: nothing
// tells whether they are gone (`kmeshctl unenroll --cookie` releases them).
func (d *Daemon) pruneLocked(phase string) int {
	start := time.Now()
	cookies, err := d.maps.EnrolledCookies()
	if err != nil {
		d.log.WithField("phase", phase).WithError(err).Warn("could not check enrolled namespaces")
		return 0
	}
	d.mu.Lock()
	refs := maps.Clone(d.enrolled)
	d.mu.Unlock()
	n := 0
	for _, c := range cookies {
		ref := refs[c]
		if ref == "" {
			continue
		}
		reason := netnsGone(ref, c)
		if reason == "" {
			continue
		}
		if _, err := d.unenrollLocked(c, ref, reason); err != nil {
			d.log.WithFields(logrus.Fields{"netns": ref, "cookie": c}).WithError(err).Warn("could not release an enrolled namespace that is gone")
			continue
		}
		n++
	}
	if n > 0 || phase != "check" {
		d.log.WithFields(logrus.Fields{"phase": phase, "released": n, "enrolled": len(cookies) - n,
			"duration_ms": float64(time.Since(start).Microseconds()) / 1000}).Info("checked enrolled namespaces")
	}
	return n
}

// netnsGone says why the namespace enrolled by ref with this cookie is gone,
// or "" when it is there or that cannot be told (an error that is not about
// the namespace itself keeps the entry).
func netnsGone(ref string, cookie uint64) string {
	p, err := netns.Path(ref)
	if errors.Is(err, netns.ErrNotFound) {
		return "its reference no longer exists"
	}
	if err != nil {
		return ""
	}
	c, err := netns.Cookie(p)
	if errors.Is(err, netns.ErrNotNetns) {
		return "its reference is no longer a network namespace"
	}
	if err != nil {
		return ""
	}
	if c != cookie {
		return fmt.Sprintf("its reference names another namespace now (cookie %d)", c)
	}
	return ""
}

// enrolledList merges the namespaces this daemon knows (enrolled by it, or
// recorded by the daemon before it) with the cookies found in the (possibly
// adopted) map: the map is the truth.
func (d *Daemon) enrolledList() []EnrolledNetns {
	d.mu.Lock()
	refs := maps.Clone(d.enrolled)
	d.mu.Unlock()
	out := []EnrolledNetns{}
	cookies, err := d.maps.EnrolledCookies()
	if err != nil {
		for c, ref := range refs {
			out = append(out, EnrolledNetns{Ref: ref, Cookie: c})
		}
	} else {
		for _, c := range cookies {
			out = append(out, EnrolledNetns{Ref: refs[c], Cookie: c})
		}
	}
	slices.SortFunc(out, func(a, b EnrolledNetns) int { return cmp.Compare(a.Cookie, b.Cookie) })
	return out
}

// refSize bounds a recorded reference (a path under /run/netns or /proc is
// far shorter).
const refSize = 256

// enrollRefs records the reference each namespace was enrolled by, in a map
// pinned next to km_enrolled (user space only: no program reads it), so that
// a restarted daemon still names its namespaces and can tell when they are
// gone. Uninstall removes it with the other pins.
type enrollRefs struct {
	m *ebpf.Map
}

func openEnrollRefs(cfg loader.Config, mp *kmaps.Maps, log logrus.FieldLogger) (*enrollRefs, error) {
	spec := &ebpf.MapSpec{Name: "km_enroll_refs", Type: ebpf.Hash, KeySize: 8, ValueSize: refSize, MaxEntries: kmaps.MaxEnrolledNetns}
	pin := cfg.MapPinPath(kmaps.MapEnrollRefs)
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err == nil {
		if cerr := spec.Compatible(m); cerr != nil {
			log.WithField("pin", pin).WithError(cerr).Warn("recorded namespace references of another layout: starting without them")
			m.Close()
			if err := m.Unpin(); err != nil {
				return nil, fmt.Errorf("replace %s: %w", pin, err)
			}
			m = nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w", pin, err)
	}
	if m == nil {
		if m, err = ebpf.NewMap(spec); err != nil {
			return nil, fmt.Errorf("create namespace reference map: %w", err)
		}
		if err := m.Pin(pin); err != nil {
			m.Close()
			return nil, fmt.Errorf("pin namespace reference map at %s: %w", pin, err)
		}
	}
	r := &enrollRefs{m: m}
	// references of cookies no longer enrolled (km_enrolled was replaced)
	enrolled, err := mp.EnrolledCookies()
	if err != nil {
		return nil, fmt.Errorf("read enrolled namespaces: %w", err)
	}
	live := map[uint64]bool{}
	for _, c := range enrolled {
		live[c] = true
	}
	recorded, err := r.all()
	if err != nil {
		return nil, err
	}
	for c := range recorded {
		if !live[c] {
			if err := r.del(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

func (r *enrollRefs) put(c uint64, ref string) error {
	var v [refSize]byte
	copy(v[:], ref)
	if err := r.m.Put(c, v); err != nil {
		return fmt.Errorf("record reference of namespace %d: %w", c, err)
	}
	return nil
}

func (r *enrollRefs) del(c uint64) error {
	if err := r.m.Delete(c); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove reference of namespace %d: %w", c, err)
	}
	return nil
}

// all returns the recorded references.
func (r *enrollRefs) all() (map[uint64]string, error) {
	out := map[uint64]string{}
	var (
		c uint64
		v [refSize]byte
	)
	it := r.m.Iterate()
	for it.Next(&c, &v) {
		out[c] = string(bytes.TrimRight(v[:], "\x00"))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read recorded namespace references: %w", err)
	}
	return out, nil
}

func (r *enrollRefs) close() { r.m.Close() }
