package config_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon/config"
)

// version n of a config: cluster "a" has the single endpoint 10.244.0.n:80.
func cfgVersion(t testing.TB, n int) []byte {
	return encode(t, boot(ls(tcpL("l", "10.96.0.10", 80, to("a"))), cluster("a", ep(fmt.Sprintf("10.244.0.%d", n), 80))), config.FormatYAML)
}

func endpointN(m *config.Model) int {
	var n int
	fmt.Sscanf(m.Clusters["a"].Endpoints[0].Addr.Addr().String(), "10.244.0.%d", &n)
	return n
}

type recorder struct {
	models chan *config.Model
	errs   chan error
}

const waitFor = 5 * time.Second

// startWatch runs Watch on path with inotify only (no polling) unless opts
// says otherwise.
func startWatch(t *testing.T, path string, opts config.WatchOptions, onChange func(*config.Model) error) *recorder {
	t.Helper()
	r := &recorder{models: make(chan *config.Model, 100), errs: make(chan error, 100)}
	if opts.Debounce == 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = -1
	}
	log := logrus.New()
	log.SetOutput(testWriter{t})
	opts.Log = log
	if onChange == nil {
		onChange = func(*config.Model) error { return nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- config.Watch(ctx, path, opts, func(m *config.Model) error {
			if err := onChange(m); err != nil {
				return err
			}
			r.models <- m
			return nil
		}, func(err error) { r.errs <- err })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after cancel", err)
			}
		case <-time.After(waitFor):
			t.Error("Watch did not return after cancel")
		}
	})
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (r *recorder) wantModel(t *testing.T, n int) *config.Model {
	t.Helper()
	select {
	case m := <-r.models:
		if got := endpointN(m); got != n {
			t.Fatalf("got config version %d, want %d", got, n)
		}
		return m
	case err := <-r.errs:
		t.Fatalf("want config version %d, got error %v", n, err)
	case <-time.After(waitFor):
		t.Fatalf("no config version %d within %v", n, waitFor)
	}
	return nil
}

func (r *recorder) wantError(t *testing.T) error {
	t.Helper()
	select {
	case m := <-r.models:
		t.Fatalf("want an error, got config version %d", endpointN(m))
	case err := <-r.errs:
		return err
	case <-time.After(waitFor):
		t.Fatalf("no error within %v", waitFor)
	}
	return nil
}

// quiet checks nothing is reported for a while (longer than the debounce).
func (r *recorder) quiet(t *testing.T) {
	t.Helper()
	select {
	case m := <-r.models:
		t.Fatalf("unexpected config version %d", endpointN(m))
	case err := <-r.errs:
		t.Fatalf("unexpected error %v", err)
	case <-time.After(300 * time.Millisecond):
	}
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace writes data to a temporary file next to path and renames it over
// path, as editors and `mv` do.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWatchEdit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	r := startWatch(t, p, config.WatchOptions{}, nil)
	r.wantModel(t, 1)

	write(t, p, cfgVersion(t, 2))
	r.wantModel(t, 2)

	// Same bytes again, a comment-free touch: nothing to report.
	write(t, p, cfgVersion(t, 2))
	now := time.Now()
	os.Chtimes(p, now, now)
	r.quiet(t)

	// In-place edit via an open file (truncate + write, as some editors do).
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(cfgVersion(t, 3))
	f.Close()
	r.wantModel(t, 3)
}

func TestWatchRenameReplace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	r := startWatch(t, p, config.WatchOptions{}, nil)
	r.wantModel(t, 1)

	replace(t, p, cfgVersion(t, 2))
	r.wantModel(t, 2)
	// The watch follows the new file: edit it in place.
	write(t, p, cfgVersion(t, 3))
	r.wantModel(t, 3)
	replace(t, p, cfgVersion(t, 4))
	r.wantModel(t, 4)
}

// TestWatchConfigMap reproduces kubelet's atomic writer: the watched path is
// a symlink through "..data", a symlink to a timestamped directory that is
// swapped by renaming a new symlink over it.
func TestWatchConfigMap(t *testing.T) {
	dir := t.TempDir()
	version := 0
	publish := func(n int) {
		version++
		ts := filepath.Join(dir, fmt.Sprintf("..2026_01_01_00_00_%02d.%d", version, n))
		if err := os.Mkdir(ts, 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(ts, "bootstrap.yaml"), cfgVersion(t, n))
		old, _ := os.Readlink(filepath.Join(dir, "..data"))
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if old != "" {
			os.RemoveAll(filepath.Join(dir, old))
		}
	}
	publish(1)
	p := filepath.Join(dir, "bootstrap.yaml")
	if err := os.Symlink("..data/bootstrap.yaml", p); err != nil {
		t.Fatal(err)
	}
	r := startWatch(t, p, config.WatchOptions{}, nil)
	r.wantModel(t, 1)
	publish(2)
	r.wantModel(t, 2)
	publish(3)
	r.wantModel(t, 3)
}

func TestWatchSymlinkElsewhere(t *testing.T) {
	target := filepath.Join(t.TempDir(), "real.yaml")
	write(t, target, cfgVersion(t, 1))
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	r := startWatch(t, p, config.WatchOptions{}, nil)
	r.wantModel(t, 1)

	// An in-place edit of the target, in a directory the path is not in.
	write(t, target, cfgVersion(t, 2))
	r.wantModel(t, 2)

	// Repoint the symlink atomically to another file.
	other := filepath.Join(filepath.Dir(target), "other.yaml")
	write(t, other, cfgVersion(t, 3))
	tmp := p + ".new"
	os.Symlink(other, tmp)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	r.wantModel(t, 3)
	write(t, other, cfgVersion(t, 4))
	r.wantModel(t, 4)
}

func TestWatchInvalidThenFixed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	r := startWatch(t, p, config.WatchOptions{}, nil)
	r.wantModel(t, 1)

	write(t, p, []byte("static_resources:\n  clusterz: []\n"))
	err := r.wantError(t)
	if !errors.Is(err, config.ErrSyntax) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `unknown field "clusterz"`) {
		t.Fatalf("error = %v", err)
	}
	// The same bad content again is not reported again.
	write(t, p, []byte("static_resources:\n  clusterz: []\n"))
	r.quiet(t)

	// Parses, but does not validate.
	write(t, p, encode(t, boot(ls(tcpL("l", "10.96.0.10", 80, to("nope")))), config.FormatYAML))
	err = r.wantError(t)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), `unknown cluster "nope"`) {
		t.Fatalf("error = %v", err)
	}

	replace(t, p, cfgVersion(t, 2))
	r.wantModel(t, 2)
}

func TestWatchMissingThenCreated(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	r := startWatch(t, p, config.WatchOptions{}, nil)
	if err := r.wantError(t); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error = %v, want ErrNotExist", err)
	}
	write(t, p, cfgVersion(t, 1))
	r.wantModel(t, 1)

	os.Remove(p)
	if err := r.wantError(t); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error = %v, want ErrNotExist", err)
	}
	write(t, p, cfgVersion(t, 1)) // back as it was: already applied
	r.quiet(t)
	write(t, p, cfgVersion(t, 2))
	r.wantModel(t, 2)
}

func TestWatchDebounce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	r := startWatch(t, p, config.WatchOptions{Debounce: 200 * time.Millisecond}, nil)
	r.wantModel(t, 1)
	for n := 2; n <= 30; n++ {
		write(t, p, cfgVersion(t, n))
		time.Sleep(2 * time.Millisecond)
	}
	r.wantModel(t, 30) // the burst yields the final version only
	r.quiet(t)
}

func TestWatchApplyErrorRetried(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	var calls atomic.Int32
	// no polling: the retry needs neither a poll nor a file change
	r := startWatch(t, p, config.WatchOptions{RetryBackoff: 50 * time.Millisecond}, func(*config.Model) error {
		if calls.Add(1) == 1 {
			return errors.New("map full")
		}
		return nil
	})
	if err := r.wantError(t); !strings.Contains(err.Error(), "apply config "+p) || !strings.Contains(err.Error(), "map full") ||
		!strings.Contains(err.Error(), "retried in 50ms") {
		t.Fatalf("error = %v", err)
	}
	r.wantModel(t, 1)
	r.quiet(t)
}

// Content that keeps failing to apply is retried with a doubling wait, not
// on every poll; a change of the file is applied at once.
func TestWatchApplyErrorBackoff(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	var calls atomic.Int32
	opts := config.WatchOptions{PollInterval: 10 * time.Millisecond, RetryBackoff: 20 * time.Millisecond, RetryMax: 160 * time.Millisecond}
	r := startWatch(t, p, opts, func(m *config.Model) error {
		if endpointN(m) == 1 {
			calls.Add(1)
			return errors.New("capacity exceeded")
		}
		return nil
	})
	// attempts at 0, 20, 60, 140, 300, 460, 620 ms: 7 in 700 ms (70 polls)
	time.Sleep(700 * time.Millisecond)
	if n := calls.Load(); n < 4 || n > 9 {
		t.Errorf("%d attempts in 700 ms with a 20 ms backoff doubling up to 160 ms, want about 7", n)
	}
	var waits []string
	for len(r.errs) > 0 {
		err := <-r.errs
		i := strings.Index(err.Error(), "retried in ")
		if i < 0 {
			t.Fatalf("error without its retry: %v", err)
		}
		waits = append(waits, strings.TrimSuffix(strings.Fields(err.Error()[i+len("retried in "):])[0], ","))
	}
	// reported while the message changes; at the cap it is the same again
	if got := strings.Join(waits, " "); got != "20ms 40ms 80ms 160ms" {
		t.Errorf("retry waits reported: %s, want 20ms 40ms 80ms 160ms", got)
	}
	write(t, p, cfgVersion(t, 2))
	r.wantModel(t, 2)
}

// Content whose apply failed at start (WatchOptions.Failed) is not tried
// again on the first pass, but after the backoff.
func TestWatchFailedAtStart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	begin := time.Now()
	r := startWatch(t, p, config.WatchOptions{Failed: config.AppliedSum(cfgVersion(t, 1)), RetryBackoff: 500 * time.Millisecond}, nil)
	r.wantModel(t, 1)
	if d := time.Since(begin); d < 500*time.Millisecond {
		t.Errorf("content that failed at start tried again after %v, before the backoff", d)
	}
}

func TestWatchArgs(t *testing.T) {
	if err := config.Watch(context.Background(), "x", config.WatchOptions{}, nil, nil); err == nil {
		t.Fatal("Watch with nil onChange succeeded")
	}
}

// Content the caller already applied is not parsed again on the first pass.
func TestWatchAppliedSkipsFirstPass(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	r := startWatch(t, p, config.WatchOptions{Applied: config.AppliedSum(cfgVersion(t, 1))}, nil)
	r.quiet(t)
	write(t, p, cfgVersion(t, 2))
	r.wantModel(t, 2)
}

// An in-place write (truncate, then write) can be seen empty: the watcher
// waits one more debounce before calling an empty file invalid, so a write
// that completes in time applies without an error; a file that stays empty
// is reported, once.
func TestWatchEmptyWhileWriting(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, cfgVersion(t, 1))
	r := startWatch(t, p, config.WatchOptions{Debounce: 300 * time.Millisecond}, nil)
	r.wantModel(t, 1)

	write(t, p, nil) // truncated ...
	time.Sleep(450 * time.Millisecond)
	write(t, p, cfgVersion(t, 2)) // ... and written, after the first pass saw it empty
	r.wantModel(t, 2)
	r.quiet(t)

	write(t, p, nil) // and left empty
	if err := r.wantError(t); !errors.Is(err, config.ErrEmpty) {
		t.Fatalf("error = %v, want ErrEmpty", err)
	}
	r.quiet(t)
}

// A file found empty by the first pass gets the same second look.
func TestWatchEmptyAtStart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bootstrap.yaml")
	write(t, p, nil)
	r := startWatch(t, p, config.WatchOptions{Debounce: 300 * time.Millisecond}, nil)
	time.Sleep(100 * time.Millisecond)
	write(t, p, cfgVersion(t, 1))
	r.wantModel(t, 1)
	r.quiet(t)
}
