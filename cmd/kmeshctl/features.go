package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/builder"
	"kmesh.dev/kmesh/probe"
)

// runFeatures writes kmesh_features.h for this host (or for a saved record).
func runFeatures(args []string, stdout, stderr io.Writer, log *logrus.Logger) int {
	fs := flag.NewFlagSet("kmeshctl features", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the header to this file (default: stdout)")
	recPath := fs.String("record", "", "use this decision record (JSON) instead of probing")
	modeFlag := fs.String("mode", "auto", "mode to decide for when probing: auto, enhanced or compat")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmeshctl features: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	var rec *probe.Record
	if *recPath != "" {
		b, err := os.ReadFile(*recPath)
		if err != nil {
			fmt.Fprintf(stderr, "kmeshctl features: read record: %v\n", err)
			return 1
		}
		rec = &probe.Record{}
		if err := json.Unmarshal(b, rec); err != nil {
			fmt.Fprintf(stderr, "kmeshctl features: parse record %s: %v\n", *recPath, err)
			return 1
		}
	} else {
		mode, err := probe.ParseMode(*modeFlag)
		if err != nil {
			fmt.Fprintf(stderr, "kmeshctl features: %v\n", err)
			return 2
		}
		r, err := probe.Decide(probe.Probe(probe.Config{Live: true, Log: log}), mode, time.Now())
		if err != nil {
			fmt.Fprintf(stderr, "kmeshctl features: %v\n", err)
			return 3
		}
		rec = r
	}
	h := builder.FeatureHeader(rec)
	if *out == "" {
		_, err := stdout.Write(h)
		if err != nil {
			return 1
		}
		return 0
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fmt.Fprintf(stderr, "kmeshctl features: create %s: %v\n", filepath.Dir(*out), err)
		return 1
	}
	if err := os.WriteFile(*out, h, 0o644); err != nil {
		fmt.Fprintf(stderr, "kmeshctl features: write header: %v\n", err)
		return 1
	}
	log.WithFields(logrus.Fields{"subsys": "builder", "file": *out, "mode": rec.Mode}).Info("feature header written")
	return 0
}
