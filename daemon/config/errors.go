package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrInvalid: the configuration parsed but cannot be applied (a
	// *ValidationError lists every problem).
	ErrInvalid = errors.New("invalid config")
	// ErrSyntax: the input is not a well-formed Envoy v3 bootstrap (a
	// *ParseError says where).
	ErrSyntax = errors.New("malformed bootstrap")
	// ErrEmpty: the input has no document (an empty or truncated file).
	ErrEmpty = errors.New("empty config")
)

// Issue is one reason a configuration cannot be applied.
type Issue struct {
	// Object names what is wrong, outermost first, e.g.
	// `cluster "reviews-v1" endpoint 10.244.1.1:0`.
	Object string
	// Msg says what is wrong and, where it helps, what to do instead.
	Msg string
}

func (i Issue) String() string { return i.Object + ": " + i.Msg }

// ValidationError lists every problem found in one configuration.
type ValidationError struct {
	Issues []Issue
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid config: ")
	if len(e.Issues) != 1 {
		b.WriteString(strconv.Itoa(len(e.Issues)))
		b.WriteString(" problems: ")
	}
	for i, is := range e.Issues {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(is.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// ParseError locates a syntax or schema error in the input.
type ParseError struct {
	// Line and Column are 1-based positions in the input as given (YAML or
	// JSON); 0 when unknown.
	Line, Column int
	// Path is the field path of the offending element, e.g.
	// "static_resources.clusters[0].lb_polcy"; empty when unknown.
	Path string
	// Msg is the cause, e.g. `unknown field "lb_polcy"`.
	Msg string
}

// Error returns e.g. `line 12, column 7: static_resources.clusters[0].lb_polcy:
// unknown field "lb_polcy"`.
func (e *ParseError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ", column %d", e.Column)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Is makes errors.Is(err, ErrSyntax) true.
func (e *ParseError) Is(target error) bool { return target == ErrSyntax }
