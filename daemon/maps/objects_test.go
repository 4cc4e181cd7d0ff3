package maps

// Test-only loading of connect.o straight into the kernel, with links that
// detach when closed. The daemon loads, pins and attaches through
// daemon/loader; these tests exercise the maps and programs themselves.

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Objects is the loaded connect object: its maps, programs and collection.
type Objects struct {
	*Maps
	Collection *ebpf.Collection
	Connect4   *ebpf.Program
	Connect6   *ebpf.Program // nil when built without KMESH_HAVE_IPV6
}

// OpenOptions tune Open.
type OpenOptions struct {
	// Collection is passed to ebpf.NewCollectionWithOptions.
	Collection ebpf.CollectionOptions
}

// LoadSpec reads objDir/connect.o.
func LoadSpec(objDir string) (*ebpf.CollectionSpec, error) {
	path := filepath.Join(objDir, ObjectConnect)
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, fmt.Errorf("load spec %s: %w", path, err)
	}
	return spec, nil
}

// Open loads objDir/connect.o into the kernel (programs pass the verifier
// here) and wraps its maps. Before 5.11 map memory is charged to
// RLIMIT_MEMLOCK: the daemon's main should call rlimit.RemoveMemlock()
// (github.com/cilium/ebpf/rlimit) once before the first Open.
func Open(objDir string, opts OpenOptions) (*Objects, error) {
	spec, err := LoadSpec(objDir)
	if err != nil {
		return nil, err
	}
	return OpenSpec(spec, opts)
}

// OpenSpec is Open for an already read spec.
func OpenSpec(spec *ebpf.CollectionSpec, opts OpenOptions) (*Objects, error) {
	coll, err := ebpf.NewCollectionWithOptions(spec, opts.Collection)
	if err != nil {
		return nil, fmt.Errorf("load collection: %w", err)
	}
	m, err := New(coll)
	if err != nil {
		coll.Close()
		return nil, err
	}
	o := &Objects{Maps: m, Collection: coll, Connect4: coll.Programs[ProgConnect4], Connect6: coll.Programs[ProgConnect6]}
	if o.Connect4 == nil {
		coll.Close()
		return nil, fmt.Errorf("load collection: program %s missing: %w", ProgConnect4, ErrInvalid)
	}
	return o, nil
}

// Close releases the collection (pinned maps stay pinned).
func (o *Objects) Close() error {
	o.Collection.Close()
	return nil
}

// AttachCgroup attaches the connect programs to the cgroup2 directory
// cgroupPath (bpf_link, so they detach when the links are closed or the
// process exits). Close the returned links to detach.
func (o *Objects) AttachCgroup(cgroupPath string) ([]link.Link, error) {
	var links []link.Link
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{{o.Connect4, ebpf.AttachCGroupInet4Connect}, {o.Connect6, ebpf.AttachCGroupInet6Connect}} {
		if a.prog == nil {
			continue
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: a.typ, Program: a.prog})
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return nil, fmt.Errorf("attach %s to %s: %w", a.typ, cgroupPath, err)
		}
		links = append(links, l)
	}
	return links, nil
}

// attachForTest is AttachCgroup, detached at the end of the test.
func attachForTest(t *testing.T, o *Objects, cgroupPath string) []link.Link {
	t.Helper()
	links, err := o.AttachCgroup(cgroupPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, l := range links {
			l.Close()
		}
	})
	return links
}
