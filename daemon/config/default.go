package config

import (
	_ "embed"
	"fmt"
)

//go:embed default.yaml
var defaultYAML []byte

// Default returns a copy of the embedded default configuration
// (default.yaml), an Envoy v3 bootstrap in YAML.
func Default() []byte { return append([]byte(nil), defaultYAML...) }

// LoadDefault translates the embedded default configuration.
func LoadDefault() (*Model, error) {
	m, err := ParseBootstrap(defaultYAML, FormatYAML)
	if err != nil {
		return nil, fmt.Errorf("load default config: %w", err)
	}
	return m, nil
}
