//go:build !linux

package config

// Off Linux there is no change notification; Watch relies on polling.
type pollOnly struct{}

func newNotifier() (notifier, error)     { return pollOnly{}, nil }
func (pollOnly) watch([]string) error    { return nil }
func (pollOnly) events() <-chan struct{} { return nil }
func (pollOnly) close()                  {}
