package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/probe"
)

func runProbe(args []string, stdout, stderr io.Writer, log *logrus.Logger) int {
	fs := flag.NewFlagSet("kmeshctl probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hostRoot := fs.String("host-root", "/", "where the host's file system is seen")
	header := fs.String("bpf-header", probe.DefaultBPFHeader, "the host's linux/bpf.h")
	bpffs := fs.String("bpf-fs-path", probe.DefaultBPFFSPath, "where bpffs is (to be) mounted")
	modeFlag := fs.String("mode", "auto", "mode to decide for: auto, enhanced or compat")
	output := fs.String("output", "text", "output format: text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmeshctl probe: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	mode, err := probe.ParseMode(*modeFlag)
	if err != nil {
		fmt.Fprintf(stderr, "kmeshctl probe: %v\n", err)
		return 2
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "kmeshctl probe: --output %q: want text or json\n", *output)
		return 2
	}
	sig := probe.Probe(probe.Config{HostRoot: *hostRoot, BPFHeader: *header, BPFFSPath: *bpffs, Live: true, Log: log})
	rec, decideErr := probe.Decide(sig, mode, time.Now())
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rec); err != nil {
			fmt.Fprintf(stderr, "kmeshctl probe: write record: %v\n", err)
			return 1
		}
	} else if err := rec.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "kmeshctl probe: %v\n", err)
		return 1
	}
	if decideErr != nil {
		log.WithFields(logrus.Fields{"subsys": "probe", "requested_mode": mode}).WithError(decideErr).Error("no mode can run")
		if errors.Is(decideErr, probe.ErrNoMode) {
			return 3
		}
		return 1
	}
	log.WithFields(logrus.Fields{"subsys": "probe", "mode": rec.Mode, "reasons": len(rec.Reasons)}).Info("mode decided")
	return 0
}
