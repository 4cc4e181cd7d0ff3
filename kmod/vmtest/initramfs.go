package vmtest

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Initramfs collects files for a newc cpio archive (the format the kernel
// unpacks into its rootfs). Parent directories are added automatically.
// Uncompressed on purpose: decompressing under TCG costs more than reading.
type Initramfs struct {
	entries map[string]cpioEntry
}

type cpioEntry struct {
	mode uint32 // full st_mode (type bits included)
	data []byte // file content or symlink target
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

// NewInitramfs returns an empty archive.
func NewInitramfs() *Initramfs {
	return &Initramfs{entries: map[string]cpioEntry{}}
}

func clean(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

func (r *Initramfs) addParents(p string) {
	for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
		if _, ok := r.entries[d]; !ok {
			r.entries[d] = cpioEntry{mode: sIFDIR | 0o755}
		}
	}
}

// Dir adds an empty directory.
func (r *Initramfs) Dir(p string) {
	p = clean(p)
	r.addParents(p)
	r.entries[p] = cpioEntry{mode: sIFDIR | 0o755}
}

// File adds a regular file with the given permission bits.
func (r *Initramfs) File(p string, perm os.FileMode, data []byte) {
	p = clean(p)
	r.addParents(p)
	r.entries[p] = cpioEntry{mode: sIFREG | uint32(perm.Perm()), data: data}
}

// Symlink adds a symbolic link.
func (r *Initramfs) Symlink(p, target string) {
	p = clean(p)
	r.addParents(p)
	r.entries[p] = cpioEntry{mode: sIFLNK | 0o777, data: []byte(target)}
}

// Has reports whether p is in the archive.
func (r *Initramfs) Has(p string) bool {
	_, ok := r.entries[clean(p)]
	return ok
}

// HostFile adds the host file hostPath (symlinks followed) at p.
func (r *Initramfs) HostFile(p, hostPath string) error {
	st, err := os.Stat(hostPath)
	if err != nil {
		return fmt.Errorf("stat %s: %w", hostPath, err)
	}
	b, err := os.ReadFile(hostPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", hostPath, err)
	}
	r.File(p, st.Mode().Perm(), b)
	return nil
}

// libDirs are where the host's dynamic loader finds libraries (Debian
// multiarch; merged /usr).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// Executable adds a host ELF executable at p together with its program
// interpreter and every shared library it needs (DT_NEEDED, recursively),
// each at the path the host loader would find it.
func (r *Initramfs) Executable(p, hostPath string) error {
	if err := r.HostFile(p, hostPath); err != nil {
		return err
	}
	seen := map[string]bool{}
	var walk func(file string) error
	walk = func(file string) error {
		f, err := elf.Open(file)
		if err != nil {
			return fmt.Errorf("open ELF %s: %w", file, err)
		}
		defer f.Close()
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return fmt.Errorf("read interpreter of %s: %w", file, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			if !seen[interp] {
				seen[interp] = true
				if err := r.HostFile(interp, interp); err != nil {
					return err
				}
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("read DT_NEEDED of %s: %w", file, err)
		}
		for _, lib := range libs {
			if seen[lib] {
				continue
			}
			seen[lib] = true
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					found = filepath.Join(d, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s: not found in %v", file, lib, libDirs)
			}
			if err := r.HostFile(found, found); err != nil {
				return err
			}
			if err := walk(found); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(hostPath)
}

// WriteTo writes the archive in newc format.
func (r *Initramfs) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names) // parents sort before children
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	for i, n := range names {
		e := r.entries[n]
		nlink := uint32(1)
		if e.mode&sIFDIR == sIFDIR {
			nlink = 2
		}
		if err := writeNewc(cw, uint32(i+1), e.mode, nlink, n, e.data); err != nil {
			return cw.n, err
		}
	}
	if err := writeNewc(cw, 0, 0, 1, "TRAILER!!!", nil); err != nil {
		return cw.n, err
	}
	if err := cw.w.(*bufio.Writer).Flush(); err != nil {
		return cw.n, fmt.Errorf("write cpio: %w", err)
	}
	return cw.n, nil
}

// writeNewc writes one "070701" record: 110-byte ASCII header, NUL-terminated
// name padded to 4 bytes, data padded to 4 bytes.
func writeNewc(w io.Writer, ino, mode, nlink uint32, name string, data []byte) error {
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	if _, err := io.WriteString(w, hdr); err != nil {
		return fmt.Errorf("write cpio: %w", err)
	}
	if _, err := io.WriteString(w, name+"\x00"+pad(len(hdr)+len(name)+1)); err != nil {
		return fmt.Errorf("write cpio: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("write cpio: %w", err)
	}
	if _, err := io.WriteString(w, pad(len(data))); err != nil {
		return fmt.Errorf("write cpio: %w", err)
	}
	return nil
}

func pad(n int) string {
	return strings.Repeat("\x00", (4-n%4)%4)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
