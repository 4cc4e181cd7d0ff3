package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Config says what to load and where to pin and attach.
type Config struct {
	// ObjectDir holds the compiled BPF objects (*.o).
	ObjectDir string
	// BPFFSPath is the bpffs mount point; it is mounted when it is not.
	BPFFSPath string
	// Cgroup2Path is where cgroup2 is (to be) mounted; programs attach at its root.
	Cgroup2Path string
	// SkipObjects are objects of ObjectDir not to load, by name without
	// ".o"; what an earlier run attached from them is detached by Attach.
	SkipObjects []string
	Log         logrus.FieldLogger
}

// Defaults for Config.
const (
	DefaultBPFFSPath   = "/sys/fs/bpf"
	DefaultCgroup2Path = "/mnt/kmesh_cgroup2"
	// PinDir is the directory under bpffs that holds kmesh's pins.
	PinDir = "kmesh"
)

// ErrNoObjects is returned when the object directory holds no BPF object.
var ErrNoObjects = errors.New("no BPF objects")

// Dataplane is the loaded data plane.
type Dataplane struct {
	cfg   Config
	log   logrus.FieldLogger
	colls map[string]*ebpf.Collection
	// Maps are all maps by name (shared between objects).
	Maps map[string]*ebpf.Map
	// progs are the attachable programs by "object/program".
	progs        map[string]program
	links        map[string]link.Link
	mapAttached  map[string]bool
	adoptedLinks map[string]bool
	state        state
	adopted      []string
	notes        []string
}

// Notes are the problems Load found that do not stop it (for /status).
func (d *Dataplane) Notes() []string { return d.notes }

// state is what the loader records next to its pins, so a later run (or
// uninstall) knows what it made.
type state struct {
	MountedBPFFS   bool      `json:"mounted_bpffs"`
	MountedCgroup2 bool      `json:"mounted_cgroup2"`
	Cgroup2Path    string    `json:"cgroup2_path"`
	Objects        []string  `json:"objects"`
	Updated        time.Time `json:"updated"`
}

type program struct {
	prog   *ebpf.Program
	attach ebpf.AttachType
	// onMap is the map a map-attached program (sk_msg) attaches to; "" for
	// cgroup programs.
	onMap string
}

// ObjectInfo describes a loaded object for /status.
type ObjectInfo struct {
	Name     string   `json:"name"`
	Programs []string `json:"programs"`
	Maps     []string `json:"maps"`
}

// LinkInfo describes an attached program for /status.
type LinkInfo struct {
	Program string `json:"program"`
	Attach  string `json:"attach"`
	// Map is the map a map-attached program (sk_msg) is attached to; Pin
	// is then the program's pin, and Adopted says it replaced a program
	// attached by an earlier run.
	Map     string `json:"map,omitempty"`
	Pin     string `json:"pin"`
	Adopted bool   `json:"adopted"`
}

func (c *Config) defaults() {
	if c.BPFFSPath == "" {
		c.BPFFSPath = DefaultBPFFSPath
	}
	if c.Cgroup2Path == "" {
		c.Cgroup2Path = DefaultCgroup2Path
	}
	if c.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.Log = l
	}
}

func (c Config) pinRoot() string { return filepath.Join(c.BPFFSPath, PinDir) }

// MapPinPath is where the loader pins the map name (the default paths
// apply to an unset Config).
func (c Config) MapPinPath(name string) string {
	c.defaults()
	return c.mapPin(name)
}
func (c Config) mapPin(n string) string {
	return filepath.Join(c.pinRoot(), "maps", n)
}
func (c Config) linkPin(n string) string {
	return filepath.Join(c.pinRoot(), "links", strings.ReplaceAll(n, "/", "__"))
}
func (c Config) progPin(n string) string {
	return filepath.Join(c.pinRoot(), "progs", strings.ReplaceAll(n, "/", "__"))
}
func (c Config) statePath() string { return filepath.Join(c.pinRoot(), "state") }

// pinName turns a link or program pin's file name back into "object/program".
func pinName(p string) string { return strings.ReplaceAll(filepath.Base(p), "__", "/") }

// Load mounts bpffs and cgroup2 when needed, loads every object in
// cfg.ObjectDir and pins their maps, reusing maps that are already pinned.
// Programs are not attached until Attach, so the caller can fill the maps
// first.
func Load(cfg Config) (*Dataplane, error) {
	cfg.defaults()
	log := cfg.Log.WithField("subsys", "loader")
	start := time.Now()
	objs, err := filepath.Glob(filepath.Join(cfg.ObjectDir, "*.o"))
	if err != nil {
		return nil, fmt.Errorf("list objects in %s: %w", cfg.ObjectDir, err)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("load objects from %s: %w (build them with make bpf, or let kmesh-start build them)", cfg.ObjectDir, ErrNoObjects)
	}
	objs = slices.DeleteFunc(objs, func(p string) bool {
		return slices.Contains(cfg.SkipObjects, strings.TrimSuffix(filepath.Base(p), ".o"))
	})
	if len(objs) == 0 {
		return nil, fmt.Errorf("load objects from %s: all skipped (%v): %w", cfg.ObjectDir, cfg.SkipObjects, ErrNoObjects)
	}
	sort.Strings(objs)

	d := &Dataplane{cfg: cfg, log: log, colls: map[string]*ebpf.Collection{}, Maps: map[string]*ebpf.Map{},
		progs: map[string]program{}, links: map[string]link.Link{}, mapAttached: map[string]bool{}, adoptedLinks: map[string]bool{}}
	prev, err := readState(cfg.statePath())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// what an earlier run mounted is then not known: uninstall leaves those mounts
		log.WithField("pin", cfg.statePath()).WithError(err).Warn("could not read the loader's state; starting a new one")
	}
	d.state = prev

	var mountedNow []string // rolled back if this Load fails
	ok := false
	defer func() {
		if !ok {
			d.Close()
			for i := len(mountedNow) - 1; i >= 0; i-- {
				_ = unix.Unmount(mountedNow[i], 0)
			}
		}
	}()
	mounted, err := ensureMount("bpf", cfg.BPFFSPath, log)
	if err != nil {
		return nil, fmt.Errorf("prepare bpffs: %w (mount the host's /sys/fs/bpf and run privileged)", err)
	}
	if mounted {
		mountedNow = append(mountedNow, cfg.BPFFSPath)
	}
	d.state.MountedBPFFS = d.state.MountedBPFFS || mounted
	mounted, err = ensureMount("cgroup2", cfg.Cgroup2Path, log)
	if err != nil {
		return nil, fmt.Errorf("prepare cgroup2: %w (mount the host's /mnt and run privileged)", err)
	}
	if mounted {
		mountedNow = append(mountedNow, cfg.Cgroup2Path)
	}
	d.state.MountedCgroup2 = d.state.MountedCgroup2 || mounted
	d.state.Cgroup2Path = cfg.Cgroup2Path
	if note := cgroup2RootNote(cfg.Cgroup2Path); note != "" {
		log.WithField("path", cfg.Cgroup2Path).Warn(note)
		d.notes = append(d.notes, note)
	}
	for _, dir := range []string{filepath.Join(cfg.pinRoot(), "maps"), filepath.Join(cfg.pinRoot(), "links"), filepath.Join(cfg.pinRoot(), "progs")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
	}

	d.state.Objects = nil
	for _, obj := range objs {
		if err := d.loadObject(obj); err != nil {
			return nil, err
		}
	}
	if err := writeState(cfg.statePath(), d.state); err != nil {
		return nil, err
	}
	ok = true
	log.WithFields(logrus.Fields{"objects": len(objs), "maps": len(d.Maps), "programs": len(d.progs),
		"adopted_maps": len(d.adopted), "duration_ms": time.Since(start).Milliseconds()}).Info("objects loaded")
	return d, nil
}

func (d *Dataplane) loadObject(path string) error {
	name := strings.TrimSuffix(filepath.Base(path), ".o")
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return fmt.Errorf("read object %s: %w", path, err)
	}
	repl := map[string]*ebpf.Map{}
	var opened []*ebpf.Map // pinned handles, closed once the collection holds clones
	defer func() {
		for _, m := range opened {
			m.Close()
		}
	}()
	for mn, ms := range spec.Maps {
		if isInternalMap(mn) {
			continue
		}
		if m, ok := d.Maps[mn]; ok { // shared with an object loaded before
			repl[mn] = m
			continue
		}
		pinned, err := ebpf.LoadPinnedMap(d.cfg.mapPin(mn), nil)
		switch {
		case err == nil && ms.Compatible(pinned) == nil:
			opened = append(opened, pinned)
			repl[mn] = pinned
			d.adopted = append(d.adopted, mn)
		case err == nil:
			// A new version changed the map's layout: the old programs keep
			// the old map until Attach swaps them; the pin is replaced now.
			d.log.WithFields(logrus.Fields{"map": mn, "reason": ms.Compatible(pinned).Error()}).Warn("pinned map incompatible; creating a new one")
			pinned.Close()
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("open pinned map %s: %w", mn, err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load object %s: verifier rejected it: %w", name, err)
		}
		return fmt.Errorf("load object %s: %w", name, err)
	}
	d.colls[name] = coll
	d.state.Objects = append(d.state.Objects, name)
	for mn, m := range coll.Maps {
		if isInternalMap(mn) {
			continue
		}
		if _, shared := d.Maps[mn]; shared {
			continue
		}
		d.Maps[mn] = m
		if _, reused := repl[mn]; reused {
			continue
		}
		pin := d.cfg.mapPin(mn)
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) { // an incompatible old map
			return fmt.Errorf("replace pin of map %s: %w", mn, err)
		}
		if err := m.Pin(pin); err != nil {
			return fmt.Errorf("pin map %s: %w", mn, err)
		}
	}
	for pn, p := range coll.Programs {
		ps := spec.Programs[pn]
		if at, ok := cgroupAttach(ps); ok {
			d.progs[name+"/"+pn] = program{prog: p, attach: at}
			continue
		}
		if ps.Type == ebpf.SkMsg {
			m, err := socketMap(spec, name)
			if err != nil {
				return fmt.Errorf("load object %s: program %s: %w", name, pn, err)
			}
			d.progs[name+"/"+pn] = program{prog: p, attach: ebpf.AttachSkMsgVerdict, onMap: m}
		}
	}
	return nil
}

// socketMap is the sockhash or sockmap of an object, which its sk_msg
// program attaches to: an object holds at most one.
func socketMap(spec *ebpf.CollectionSpec, object string) (string, error) {
	var found []string
	for mn, ms := range spec.Maps {
		if ms.Type == ebpf.SockHash || ms.Type == ebpf.SockMap {
			found = append(found, mn)
		}
	}
	if len(found) != 1 {
		sort.Strings(found)
		return "", fmt.Errorf("an sk_msg program attaches to its object's one sockhash or sockmap; %s has %d %v", object, len(found), found)
	}
	return found[0], nil
}

// isInternalMap tells .rodata/.data/.bss maps, which are per object.
func isInternalMap(name string) bool { return strings.HasPrefix(name, ".") }

func cgroupAttach(ps *ebpf.ProgramSpec) (ebpf.AttachType, bool) {
	switch ps.Type {
	case ebpf.CGroupSockAddr, ebpf.CGroupSock, ebpf.SockOps, ebpf.CGroupSKB, ebpf.CGroupSockopt:
		return ps.AttachType, true
	}
	return 0, false
}

// Attach attaches the programs: map-attached ones (sk_msg) first, so that a
// socket the sockops program adds to the map already has its verdict
// program, then every cgroup program at the cgroup2 root. A cgroup program
// whose pinned link exists is swapped into that link atomically (adoption);
// others get a new link, pinned. An sk_msg program replaces the one attached
// to its map, which stays pinned in between (sockets already in the map keep
// the program they were added with). Links and programs pinned by an earlier
// version that this one no longer has are detached last.
func (d *Dataplane) Attach() error {
	names := make([]string, 0, len(d.progs))
	for n := range d.progs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		mi, mj := d.progs[names[i]].onMap != "", d.progs[names[j]].onMap != ""
		if mi != mj {
			return mi
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		if d.progs[n].onMap != "" {
			if err := d.attachToMap(n); err != nil {
				return err
			}
			continue
		}
		prog, at := d.progs[n].prog, d.progs[n].attach
		pin := d.cfg.linkPin(n)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := l.Update(prog); err != nil {
				l.Close()
				return fmt.Errorf("swap program %s into pinned link: %w", n, err)
			}
			d.links[n] = l
			d.adoptedLinks[n] = true
			d.log.WithFields(logrus.Fields{"program": n, "pin": pin}).Info("adopted pinned link")
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open pinned link %s: %w", pin, err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: d.cfg.Cgroup2Path, Attach: at, Program: prog})
		if err != nil {
			return fmt.Errorf("attach %s (%s) at %s: %w", n, at, d.cfg.Cgroup2Path, err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin link of %s: %w", n, err)
		}
		d.links[n] = l
		d.log.WithFields(logrus.Fields{"program": n, "attach": at.String(), "cgroup": d.cfg.Cgroup2Path}).Info("attached")
	}
	return d.detachStale()
}

// attachToMap attaches the map-attached program n to its map and pins it
// (the pin is how uninstall finds it to detach).
func (d *Dataplane) attachToMap(n string) error {
	p := d.progs[n]
	m := d.Maps[p.onMap]
	if m == nil {
		return fmt.Errorf("attach %s: map %s not loaded", n, p.onMap)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: m.FD(), Program: p.prog, Attach: p.attach}); err != nil {
		return fmt.Errorf("attach %s (%s) to map %s: %w", n, p.attach, p.onMap, err)
	}
	pin := d.cfg.progPin(n)
	_, err := os.Stat(pin)
	replaced := err == nil
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace pin of program %s: %w", n, err)
	}
	if err := p.prog.Pin(pin); err != nil {
		return fmt.Errorf("pin program %s: %w", n, err)
	}
	d.mapAttached[n] = true
	d.adoptedLinks[n] = replaced
	d.log.WithFields(logrus.Fields{"program": n, "attach": p.attach.String(), "map": p.onMap, "replaced": replaced}).Info("attached")
	return nil
}

// detachStale detaches the links and map-attached programs pinned by an
// earlier run whose programs this one does not have (an object or program
// that a new version or another feature set dropped), so that no old
// program keeps running unseen.
func (d *Dataplane) detachStale() error {
	var errs []error
	links, _ := filepath.Glob(filepath.Join(d.cfg.pinRoot(), "links", "*"))
	for _, p := range links {
		n := pinName(p)
		if _, ok := d.progs[n]; ok {
			continue
		}
		errs = append(errs, detachLinkPin(p)...)
		d.log.WithFields(logrus.Fields{"program": n, "pin": p}).Warn("detached a program this version does not have")
	}
	progs, _ := filepath.Glob(filepath.Join(d.cfg.pinRoot(), "progs", "*"))
	for _, p := range progs {
		n := pinName(p)
		if _, ok := d.progs[n]; ok {
			continue
		}
		errs = append(errs, detachProgPin(d.cfg, p)...)
		d.log.WithFields(logrus.Fields{"program": n, "pin": p}).Warn("detached a program this version does not have")
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach stale programs: %w", err)
	}
	return nil
}

// Objects describes the loaded objects.
func (d *Dataplane) Objects() []ObjectInfo {
	var out []ObjectInfo
	for _, name := range d.state.Objects {
		c := d.colls[name]
		oi := ObjectInfo{Name: name}
		for pn := range c.Programs {
			oi.Programs = append(oi.Programs, pn)
		}
		for mn := range c.Maps {
			if !isInternalMap(mn) {
				oi.Maps = append(oi.Maps, mn)
			}
		}
		sort.Strings(oi.Programs)
		sort.Strings(oi.Maps)
		out = append(out, oi)
	}
	return out
}

// Links describes the attached programs.
func (d *Dataplane) Links() []LinkInfo {
	var out []LinkInfo
	for n := range d.links {
		out = append(out, LinkInfo{Program: n, Attach: d.progs[n].attach.String(), Pin: d.cfg.linkPin(n), Adopted: d.adoptedLinks[n]})
	}
	for n := range d.mapAttached {
		out = append(out, LinkInfo{Program: n, Attach: d.progs[n].attach.String(), Map: d.progs[n].onMap, Pin: d.cfg.progPin(n), Adopted: d.adoptedLinks[n]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Program < out[j].Program })
	return out
}

// AdoptedMaps lists the maps reused from a previous run.
func (d *Dataplane) AdoptedMaps() []string { return append([]string(nil), d.adopted...) }

// Close releases the loader's file descriptors. Pinned maps and links stay,
// so traffic keeps flowing and a restarted daemon adopts them.
func (d *Dataplane) Close() {
	for _, l := range d.links {
		l.Close()
	}
	for _, c := range d.colls {
		c.Close()
	}
}

// The loader's state lives next to its pins: bpffs holds only BPF objects,
// so it is a one-entry array map pinned as <pin root>/state whose value is
// the JSON document, zero-padded.
const stateValueSize = 4096

func readState(p string) (state, error) {
	var s state
	m, err := ebpf.LoadPinnedMap(p, nil)
	if err != nil {
		return s, err
	}
	defer m.Close()
	buf := make([]byte, stateValueSize)
	if err := m.Lookup(uint32(0), &buf); err != nil {
		return s, fmt.Errorf("read loader state: %w", err)
	}
	if err := json.Unmarshal(bytes.TrimRight(buf, "\x00"), &s); err != nil {
		return s, fmt.Errorf("decode loader state: %w", err)
	}
	return s, nil
}

func writeState(p string, s state) error {
	s.Updated = time.Now().UTC()
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode loader state: %w", err)
	}
	if len(b) > stateValueSize {
		return fmt.Errorf("encode loader state: %d bytes, more than %d", len(b), stateValueSize)
	}
	m, err := ebpf.LoadPinnedMap(p, nil)
	if errors.Is(err, os.ErrNotExist) {
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: "kmesh_state", Type: ebpf.Array, KeySize: 4, ValueSize: stateValueSize, MaxEntries: 1})
		if err == nil {
			err = m.Pin(p)
		}
	}
	if err != nil {
		return fmt.Errorf("open loader state map: %w", err)
	}
	defer m.Close()
	buf := make([]byte, stateValueSize)
	copy(buf, b)
	if err := m.Put(uint32(0), buf); err != nil {
		return fmt.Errorf("write loader state: %w", err)
	}
	return nil
}
