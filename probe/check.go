package probe

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Status is the outcome of one check.
type Status string

// The four statuses of a check. See the package documentation.
const (
	Supported    Status = "supported"
	Unsupported  Status = "unsupported"
	NotPermitted Status = "not_permitted"
	Inconclusive Status = "inconclusive"
)

// ErrUnsupported marks a definite "absent" answer produced by this package
// (the kernel's own ErrNotSupported is recognised as well).
var ErrUnsupported = errors.New("not supported")

// Check is one signal about the host.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix tells the user what to do when the check is not supported. Set by the
	// probe that knows the context (which mount, which package).
	Fix string `json:"fix,omitempty"`
	// Err is the error behind a non-supported status, kept for callers that
	// branch on it. It is not serialised: Detail carries its text.
	Err error `json:"-"`
}

// OK reports whether the check is supported.
func (c Check) OK() bool { return c.Status == Supported }

// StatusOf maps an error to a status following cilium/ebpf's features
// contract: nil is supported, ErrNotSupported is unsupported, EPERM/EACCES is
// not permitted, anything else is inconclusive.
func StatusOf(err error) Status {
	switch {
	case err == nil:
		return Supported
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, ErrUnsupported):
		return Unsupported
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES), errors.Is(err, fs.ErrPermission):
		return NotPermitted
	default:
		return Inconclusive
	}
}

// fromErr builds a check from an error; detail is used when err is nil.
func fromErr(name string, err error, detail string) Check {
	c := Check{Name: name, Status: StatusOf(err), Detail: detail, Err: err}
	if err != nil {
		c.Detail = err.Error()
	}
	return c
}

func supported(name, format string, args ...any) Check {
	return Check{Name: name, Status: Supported, Detail: fmt.Sprintf(format, args...)}
}

func unsupported(name, fix, format string, args ...any) Check {
	err := fmt.Errorf(format+": %w", append(args, ErrUnsupported)...)
	return Check{Name: name, Status: Unsupported, Detail: fmt.Sprintf(format, args...), Fix: fix, Err: err}
}

func inconclusive(name string, err error) Check {
	return Check{Name: name, Status: Inconclusive, Detail: err.Error(), Err: err}
}
