package manifest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HelmVersion is the helm the tests render the chart with, built from the
// Go module proxy (no binary download).
const HelmVersion = "v3.22.0"

// Helm runs a helm binary with its caches and configuration in a directory
// of its own (never the user's ~/.config/helm).
type Helm struct {
	Path string
	Home string
}

// FindHelm returns $HELM when set; otherwise a helm HelmVersion built once
// with `go install helm.sh/helm/v3/cmd/helm@HelmVersion` into
// <user cache>/kmesh-tools/helm-HelmVersion (a cold build takes minutes on
// two cores; later calls only check that the binary is there). home holds
// helm's own cache and configuration.
func FindHelm(ctx context.Context, home string) (*Helm, error) {
	if p := os.Getenv("HELM"); p != "" {
		return &Helm{Path: p, Home: home}, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, fmt.Errorf("find a cache directory for helm: %w", err)
	}
	bin := filepath.Join(cache, "kmesh-tools", "helm-"+HelmVersion)
	p := filepath.Join(bin, "helm")
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return &Helm{Path: p, Home: home}, nil
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", bin, err)
	}
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.CommandContext(ctx, goCmd, "install", "helm.sh/helm/v3/cmd/helm@"+HelmVersion)
	// outside this module: the @version form builds helm with its own go.mod
	cmd.Dir = bin
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build helm %s from the Go module proxy: %w\n%s", HelmVersion, err, tailLines(string(out), 20))
	}
	return &Helm{Path: p, Home: home}, nil
}

// Run runs helm with args and returns its standard output.
func (h *Helm) Run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.Path, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.Home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.Home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.Home, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// Template renders chart as release "kmesh" in namespace with extra helm
// arguments (--set ..., -f ...) and decodes the result.
func (h *Helm) Template(ctx context.Context, chart, namespace string, extra ...string) ([]Object, error) {
	args := append([]string{"template", "kmesh", chart, "--namespace", namespace}, extra...)
	out, err := h.Run(ctx, args...)
	if err != nil {
		return nil, err
	}
	return Decode(out, "helm template "+strings.Join(extra, " "))
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
