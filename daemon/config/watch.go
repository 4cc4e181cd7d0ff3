package config

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
)

// WatchOptions tunes Watch. The zero value is ready to use.
type WatchOptions struct {
	// Debounce is how long the file must stay quiet after a change event
	// before it is read (editors and kubelet write in several steps).
	// Default 100ms.
	Debounce time.Duration
	// PollInterval re-checks the file this often even without events, a
	// safety net for changes inotify cannot see (e.g. some network file
	// systems) and the only mechanism off Linux. Default 10s; negative
	// disables polling (off Linux that leaves only the initial load).
	PollInterval time.Duration
	// Applied is the SHA-256 of the file content the caller has already
	// applied (read at start; AppliedSum computes it): identical content is
	// not parsed again on the first pass, and the caller need not keep it.
	Applied *[sha256.Size]byte
	// Rejected is the SHA-256 of file content the caller found invalid and
	// reported already (at start): it is not reported again until the file
	// changes.
	Rejected *[sha256.Size]byte
	// Failed is the SHA-256 of file content whose apply (onChange) failed
	// at start: it is retried after RetryBackoff, not on the first pass.
	Failed *[sha256.Size]byte
	// RetryBackoff is how long Watch waits before it applies content whose
	// apply failed once more; it doubles with every failure of the same
	// content, up to RetryMax. A change of the file is applied at once.
	// Defaults 1s and 5m.
	RetryBackoff, RetryMax time.Duration
	// Restored, when set, is called (from Watch's goroutine) when the file
	// is back at the content applied last after a failure was reported, so
	// that the caller can stop showing that failure: nothing is applied
	// then, the applied version never stopped being in effect.
	Restored func()
	// Log receives one line per applied or rejected config. Default: the
	// logrus standard logger.
	Log logrus.FieldLogger
}

// AppliedSum is the WatchOptions.Applied of content.
func AppliedSum(content []byte) *[sha256.Size]byte {
	sum := sha256.Sum256(content)
	return &sum
}

// Watch applies the configuration file at path and every later version of
// it, until ctx is done.
//
// It reads the file once at start, then again whenever it may have changed:
// in-place writes, atomic replacement by rename (editors, mv), and
// Kubernetes ConfigMap updates (path is a symlink through "..data", which
// kubelet swaps atomically). Watches are re-established after every
// replacement. Events are debounced, and content identical to the last
// applied version is skipped.
//
// Each new valid version is passed to onChange; if onChange returns an
// error, that version counts as not applied and is retried after
// RetryBackoff, doubling up to RetryMax while it keeps failing (a failure
// that depends on the content, such as capacity, is not retried every
// poll). Every failure (unreadable file, invalid config, onChange error) is
// logged and passed to onError, which may be nil; an invalid file
// does not call onChange, so the caller's previous model stays in effect.
// The same failure is reported once, not on every poll. onChange and
// onError are called from Watch's goroutine, one at a time.
//
// Watch returns nil when ctx is done, or an error if it cannot start.
func Watch(ctx context.Context, path string, opts WatchOptions, onChange func(*Model) error, onError func(error)) error {
	if onChange == nil {
		return errors.New("watch config: onChange is nil")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 10 * time.Second
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Minute
	}
	opts.RetryMax = max(opts.RetryMax, opts.RetryBackoff)
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watch config %s: %w", path, err)
	}
	n, err := newNotifier()
	if err != nil {
		return fmt.Errorf("watch config %s: %w", path, err)
	}
	defer n.close()

	w := &watcher{
		path:     abs,
		notifier: n,
		onChange: onChange,
		onError:  onError,
		log:      opts.Log.WithFields(logrus.Fields{"subsys": "config", "path": abs}),
	}
	if opts.Applied != nil {
		w.applied, w.haveApp = *opts.Applied, true
	}
	if opts.Rejected != nil {
		w.rejected, w.haveRej = *opts.Rejected, true
	}
	w.restored = opts.Restored
	w.backoff, w.backoffMax = opts.RetryBackoff, opts.RetryMax
	w.retry = time.NewTimer(time.Hour)
	w.retry.Stop()
	defer w.retry.Stop()
	if opts.Failed != nil {
		w.failedApply(*opts.Failed)
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	// one pass: resync the watches, reload; a file found empty (an in-place
	// write in progress) is looked at again after the debounce, as for an event
	pass := func() {
		w.resync()
		if w.reload() {
			debounce.Reset(opts.Debounce)
		}
	}
	pass()
	// after the first pass: a reload from here on is a change of the file
	w.log.WithFields(logrus.Fields{"phase": "watch", "poll_interval": opts.PollInterval}).Info("watching config")

	var poll <-chan time.Time
	if opts.PollInterval > 0 {
		t := time.NewTicker(opts.PollInterval)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.events():
			debounce.Reset(opts.Debounce)
		case <-debounce.C:
			pass()
		case <-poll:
			pass()
		case <-w.retry.C:
			pass()
		}
	}
}

// notifier signals possible changes to a set of watched paths.
type notifier interface {
	// watch makes the set of watched paths exactly paths (directories and
	// files, symlinks followed); paths that do not exist are skipped.
	watch(paths []string) error
	// events receives a value after one or more events (coalesced).
	events() <-chan struct{}
	close()
}

type watcher struct {
	path     string
	notifier notifier
	onChange func(*Model) error
	onError  func(error)
	restored func()
	log      logrus.FieldLogger

	applied  [sha256.Size]byte // content of the applied version
	haveApp  bool
	failing  bool              // a failure was reported since the applied version
	rejected [sha256.Size]byte // content last rejected as invalid
	haveRej  bool
	lastErr  string // last reported non-content error, to report it once
	watchErr string
	// emptySeen: the last pass found the file empty and waited one more
	// debounce before calling it invalid (an in-place write, `> file` or
	// os.WriteFile, truncates before it writes).
	emptySeen bool

	// content whose apply failed: not tried again before retryAt (the
	// retry timer fires then), each failure doubling the wait
	failSum             [sha256.Size]byte
	haveFail            bool
	failures            int
	retryAt             time.Time
	retry               *time.Timer
	backoff, backoffMax time.Duration
}

// failedApply records that applying content sum failed and schedules the
// next attempt; it returns the wait.
func (w *watcher) failedApply(sum [sha256.Size]byte) time.Duration {
	if w.haveFail && sum == w.failSum {
		w.failures++
	} else {
		w.failSum, w.haveFail, w.failures = sum, true, 1
	}
	wait := w.backoff
	for i := 1; i < w.failures && wait < w.backoffMax; i++ {
		wait *= 2
	}
	wait = min(wait, w.backoffMax)
	w.retryAt = time.Now().Add(wait)
	w.retry.Reset(wait)
	return wait
}

// resync points the watches at the current targets: the directory holding
// path (renames, ConfigMap swaps), and the file path resolves to and its
// directory (in-place writes, also through symlinks and bind mounts).
func (w *watcher) resync() {
	paths := []string{filepath.Dir(w.path)}
	if real, err := filepath.EvalSymlinks(w.path); err == nil {
		paths = append(paths, filepath.Dir(real), real)
	}
	err := w.notifier.watch(paths)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != w.watchErr && err != nil {
		w.log.WithField("phase", "watch").WithError(err).Warn("config watch incomplete; relying on polling")
	}
	w.watchErr = msg
}

// reload reads, parses and applies the file when its content changed. It
// returns true when it wants another pass after the debounce: the file was
// empty for the first time, which an in-place write in progress looks like.
func (w *watcher) reload() (again bool) {
	start := time.Now()
	empty := false
	defer func() { w.emptySeen = empty && again }()
	readErr := func(err error) {
		what := "read"
		if errors.Is(err, fs.ErrNotExist) {
			what = "missing"
		}
		w.fail(fmt.Errorf("load config %s: %w", w.path, err), what, false)
	}
	// Most passes (every poll, the first one after start) find the content
	// unchanged: hash it streaming, without holding the file (15 MB with
	// 10,000 services) in memory.
	if sum, err := hashFile(w.path); err != nil {
		readErr(err)
		return
	} else if w.unchanged(sum) {
		return
	}
	data, err := readLimited(w.path)
	if err != nil {
		readErr(err)
		return
	}
	sum := sha256.Sum256(data) // the content parsed (it may have changed since the hash)
	if w.unchanged(sum) {
		return
	}
	m, err := ParseBootstrap(data, FormatOf(w.path))
	if errors.Is(err, ErrEmpty) && !w.emptySeen {
		empty = true
		return true
	}
	if err != nil {
		w.rejected, w.haveRej = sum, true
		w.fail(fmt.Errorf("load config %s: %w", w.path, err), "invalid", true)
		return
	}
	if err := w.onChange(m); err != nil {
		wait := w.failedApply(sum)
		w.fail(fmt.Errorf("apply config %s version %s: %w (retried in %v, or when the file changes)", w.path, m.Version, err, wait.Round(time.Millisecond)), "apply", false)
		return
	}
	w.applied, w.haveApp = sum, true
	w.haveRej, w.lastErr, w.failing, w.haveFail = false, "", false, false
	w.retry.Stop()
	w.log.WithFields(logrus.Fields{
		"phase":    "apply",
		"version":  m.Version,
		"services": len(m.Services),
		"clusters": len(m.Clusters),
		"notes":    len(m.Unsupported),
		"duration": time.Since(start),
	}).Info("config applied")
	LogSerialDecode(w.log, m, len(data))
	return false
}

// unchanged reports whether sum is the content applied or rejected last.
func (w *watcher) unchanged(sum [sha256.Size]byte) bool {
	if w.haveApp && sum == w.applied {
		if w.failing {
			w.log.WithField("phase", "watch").Info("config file back at the applied version; the failure reported since is over")
			if w.restored != nil {
				w.restored()
			}
		}
		w.lastErr, w.haveRej, w.failing = "", false, false
		return true
	}
	if w.haveFail && sum == w.failSum && time.Now().Before(w.retryAt) {
		return true // its retry is not due
	}
	return w.haveRej && sum == w.rejected
}

// hashFile is the SHA-256 of the file's content, read in pieces.
func hashFile(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return sum, err
	}
	if n > MaxConfigBytes {
		return sum, fmt.Errorf("read config: larger than %d bytes", MaxConfigBytes)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// fail reports err unless it is the same non-content error as last time
// (always, when always is set).
func (w *watcher) fail(err error, what string, always bool) {
	msg := err.Error()
	if !always && msg == w.lastErr {
		return
	}
	w.lastErr, w.failing = msg, true
	w.log.WithFields(logrus.Fields{"phase": what}).WithError(err).Warn("config not applied; previous config stays in effect")
	if w.onError != nil {
		w.onError(err)
	}
}
