package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// This file keeps the YAML path DecodeBootstrap used before the direct
// node-to-JSON encoder (YAML → yaml.Node → map[string]any → json.Marshal →
// protojson), as the reference the new path is compared with and as the
// baseline of BenchmarkDecodeYAML10k.

// RefDecodeBootstrap is DecodeBootstrap as it was: for YAML, the document is
// decoded into maps and marshalled with encoding/json.
func RefDecodeBootstrap(data []byte, format Format) (*bootstrapv3.Bootstrap, error) {
	if format != FormatYAML {
		return DecodeBootstrap(data, format)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	jsonData, doc, err := RefYAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("parse bootstrap: %w", err)
	}
	b := new(bootstrapv3.Bootstrap)
	err = protojson.Unmarshal(jsonData, b)
	runtime.KeepAlive(doc) // the former path kept the tree to locate errors
	if err != nil {
		return nil, fmt.Errorf("parse bootstrap: %w", locate(err, jsonData, data))
	}
	return b, nil
}

// RefYAMLToJSON is the former yamlToJSON.
func RefYAMLToJSON(data []byte) (out []byte, doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, doc, err = nil, nil, &ParseError{Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	doc = new(yaml.Node)
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, ErrEmpty
		}
		return nil, nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, nil, &ParseError{Line: extra.Line, Column: extra.Column, Msg: "more than one YAML document; a bootstrap is one document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, nil, yamlError(err)
	}
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null") {
		return nil, nil, ErrEmpty
	}
	var v any
	if err := doc.Decode(&v); err != nil {
		return nil, nil, yamlError(err)
	}
	v, err = refJSONable(v)
	if err != nil {
		return nil, nil, &ParseError{Msg: err.Error()}
	}
	out, err = json.Marshal(v)
	if err != nil {
		return nil, nil, &ParseError{Msg: fmt.Sprintf("convert YAML to JSON: %v", err)}
	}
	return out, doc, nil
}

func refJSONable(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			j, err := refJSONable(e)
			if err != nil {
				return nil, err
			}
			x[k] = j
		}
		return x, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			j, err := refJSONable(e)
			if err != nil {
				return nil, err
			}
			ks := fmt.Sprint(k)
			if _, dup := out[ks]; dup {
				return nil, fmt.Errorf("invalid YAML: mapping key %q appears twice", ks)
			}
			out[ks] = j
		}
		return out, nil
	case []any:
		for i, e := range x {
			j, err := refJSONable(e)
			if err != nil {
				return nil, err
			}
			x[i] = j
		}
		return x, nil
	}
	return v, nil
}

// DecodeYAMLOnePiece is the YAML decode without its parallel path: the
// whole document parsed into one node tree, written as JSON, decoded (the
// path a YAML bootstrap takes when the parallel one does not apply).
func DecodeYAMLOnePiece(data []byte) (*bootstrapv3.Bootstrap, error) {
	j, err := yamlToJSON(data)
	if err != nil {
		return nil, err
	}
	return decodeJSON(j, decodeWorkers())
}
