package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Cache errors callers branch on.
var (
	ErrCacheMiss    = errors.New("cache miss")
	ErrCacheCorrupt = errors.New("cache entry corrupt")
	// ErrCacheWrite marks a cache that cannot be written (read-only mount,
	// permissions, full disk); the build itself may have succeeded.
	ErrCacheWrite = errors.New("cache not writable")
)

// Cache is a content-addressed store of build outputs. An entry is a
// directory named by its key holding the outputs and manifest.json, which
// lists every file with its sha256 and carries its own digest. An entry is
// verified on every lookup: a missing, extra, changed or unlisted file, or a
// manifest that does not match itself or its key, makes it corrupt, and a
// corrupt entry is removed and rebuilt, never used. Entries are written into
// a temporary directory and renamed into place, so a crash leaves no half
// entry. The build report (ReportName) next to the outputs is per-start
// metadata and not part of the content. The cache protects against corruption and accidental edits; it is a
// root-owned hostPath, not a defence against someone who can write it.
type Cache struct {
	Dir string
	// Keep is how many entries Prune keeps (most recently used first).
	Keep int
}

// Manifest describes a cache entry.
type Manifest struct {
	Key     string            `json:"key"`
	Created time.Time         `json:"created"`
	Inputs  map[string]string `json:"inputs"`
	Files   map[string]string `json:"files"` // relative path -> sha256
	// Digest is the sha256 of the manifest with Digest empty.
	Digest string `json:"digest"`
}

// manifestName is the entry's manifest file.
const manifestName = "manifest.json"

// Entry is a verified cache entry.
type Entry struct {
	Dir      string
	Manifest Manifest
}

// Lookup returns the verified entry for key, ErrCacheMiss when there is none,
// or an error wrapping ErrCacheCorrupt (the entry has been removed).
func (c *Cache) Lookup(key string) (*Entry, error) {
	dir := filepath.Join(c.Dir, key)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, ErrCacheMiss
	}
	m, err := verifyEntry(dir, key)
	if err != nil {
		rmErr := os.RemoveAll(dir)
		return nil, errors.Join(fmt.Errorf("cache entry %s: %w: %w", key, ErrCacheCorrupt, err), rmErr)
	}
	now := time.Now()
	_ = os.Chtimes(filepath.Join(dir, manifestName), now, now) // last use, for Prune
	return &Entry{Dir: dir, Manifest: *m}, nil
}

// Store builds a new entry for key with build (which writes its outputs into
// the directory it is given), records the manifest and publishes the entry.
func (c *Cache) Store(key string, inputs map[string]string, build func(dir string) error) (*Entry, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cache %s: %w: %w", c.Dir, ErrCacheWrite, err)
	}
	tmp, err := os.MkdirTemp(c.Dir, ".tmp-"+key[:min(12, len(key))]+"-")
	if err != nil {
		return nil, fmt.Errorf("create cache entry in %s: %w: %w", c.Dir, ErrCacheWrite, err)
	}
	defer os.RemoveAll(tmp)
	if err := build(tmp); err != nil {
		return nil, err
	}
	m := Manifest{Key: key, Created: time.Now().UTC(), Inputs: inputs, Files: map[string]string{}}
	if err := filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tmp, p)
		sum, err := fileSHA256(p)
		m.Files[rel] = sum
		return err
	}); err != nil {
		return nil, fmt.Errorf("hash cache entry: %w: %w", ErrCacheWrite, err)
	}
	m.Digest = m.digest()
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, manifestName), b, 0o644); err != nil {
		return nil, fmt.Errorf("write manifest: %w: %w", ErrCacheWrite, err)
	}
	dir := filepath.Join(c.Dir, key)
	_ = os.RemoveAll(dir) // a corrupt leftover, if any
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("publish cache entry: %w: %w", ErrCacheWrite, err)
	}
	return &Entry{Dir: dir, Manifest: m}, nil
}

// Prune removes all but the Keep most recently used entries and any
// leftover temporary directories. It returns the removed keys.
func (c *Cache) Prune() ([]string, error) {
	ents, err := os.ReadDir(c.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list cache %s: %w", c.Dir, err)
	}
	type used struct {
		name string
		at   time.Time
	}
	var entries []used
	var removed []string
	var errs []error
	for _, e := range ents {
		p := filepath.Join(c.Dir, e.Name())
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
				errs = append(errs, os.RemoveAll(p))
			}
			continue
		}
		if !e.IsDir() {
			continue
		}
		at := time.Time{}
		if st, err := os.Stat(filepath.Join(p, manifestName)); err == nil {
			at = st.ModTime()
		}
		entries = append(entries, used{e.Name(), at})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].at.After(entries[j].at) })
	keep := c.Keep
	if keep < 1 {
		keep = 1
	}
	for i := keep; i < len(entries); i++ {
		if err := os.RemoveAll(filepath.Join(c.Dir, entries[i].name)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, entries[i].name)
	}
	return removed, errors.Join(errs...)
}

func verifyEntry(dir, key string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if m.Key != key {
		return nil, fmt.Errorf("manifest is for key %s", m.Key)
	}
	if m.Digest != m.digest() {
		return nil, errors.New("manifest digest mismatch")
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == manifestName || rel == ReportName {
			return nil // metadata, not content: the report says how this start used the entry
		}
		want, ok := m.Files[rel]
		if !ok {
			return fmt.Errorf("unlisted file %s", rel)
		}
		got, err := fileSHA256(p)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: sha256 %s, manifest says %s", rel, got[:12], want[:12])
		}
		seen[rel] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	for rel := range m.Files {
		if !seen[rel] {
			return nil, fmt.Errorf("missing file %s", rel)
		}
	}
	return &m, nil
}

func (m Manifest) digest() string {
	m.Digest = ""
	b, _ := json.Marshal(m) // map keys are sorted: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// HashTree digests every regular file under dir (path and content), for the
// sources' part of a cache key. Build artefacts of kbuild are skipped.
func HashTree(dir string) (string, error) {
	h := sha256.New()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() || isBuildArtefact(d.Name()) {
			return nil
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash sources %s: %w", dir, err)
	}
	sort.Strings(files)
	for _, p := range files {
		sum, err := fileSHA256(p)
		if err != nil {
			return "", fmt.Errorf("hash sources: %w", err)
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s\x00%s\n", rel, sum)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func isBuildArtefact(name string) bool {
	for _, suf := range []string{".o", ".ko", ".mod", ".mod.c", ".cmd", ".order", ".symvers", ".test"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}
