package vmtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"kmesh.dev/kmesh/builder"
)

// KernelModule is one module of the image package, uncompressed.
type KernelModule struct {
	Name string // canonical name (dashes as underscores)
	Data []byte // uncompressed .ko
}

func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// ResolveModules returns the named modules of t's image package and all
// their dependencies (modinfo "depends"), in load order, uncompressed
// (Debian 6.12 ships .ko.xz; busybox insmod wants plain .ko). Modules built
// into the kernel (listed in modules.builtin) are dropped.
func ResolveModules(ctx context.Context, t *KernelTree, names []string) ([]KernelModule, error) {
	index := map[string]string{}
	root := filepath.Join(t.ModulesDir(), "kernel")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		base := d.Name()
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			if strings.HasSuffix(base, ext) {
				index[modName(strings.TrimSuffix(base, ext))] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules of %s: %w", t.Release, err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(t.ModulesDir(), "modules.builtin")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" {
				builtin[modName(strings.TrimSuffix(filepath.Base(line), ".ko"))] = true
			}
		}
	}
	var order []KernelModule
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string) error
	visit = func(name string) error {
		name = modName(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		state[name] = 1
		p, ok := index[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("module %s: not in %s (nor built in)", name, t.Release)
		}
		data, err := readModule(ctx, p)
		if err != nil {
			return err
		}
		info, err := builder.ModuleInfoFrom(bytes.NewReader(data), p)
		if err != nil {
			return err
		}
		for _, dep := range strings.Split(info["depends"], ",") {
			if dep = strings.TrimSpace(dep); dep != "" {
				if err := visit(dep); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
		}
		state[name] = 2
		order = append(order, KernelModule{Name: name, Data: data})
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func readModule(ctx context.Context, p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".ko"):
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		return b, nil
	case strings.HasSuffix(p, ".gz"):
		fh, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		defer fh.Close()
		zr, err := gzip.NewReader(fh)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", p, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(p, ".xz"):
		return runCmdOut(ctx, "xz", "-dc", p)
	case strings.HasSuffix(p, ".zst"):
		return runCmdOut(ctx, "zstd", "-dcq", p)
	}
	return nil, fmt.Errorf("module %s: unknown compression", p)
}

func runCmdOut(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := runCmd(ctx, "", name, args...)
	if err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, fmt.Errorf("decompress %v: not an ELF file", args)
	}
	return out, nil
}
