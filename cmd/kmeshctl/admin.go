package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const defaultAdminAddr = "127.0.0.1:15200"

// runAdmin implements the subcommands that talk to a running daemon's admin
// API: enroll, unenroll (POST) and status (GET).
func runAdmin(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kmeshctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin-addr", defaultAdminAddr, "the daemon's admin address")
	var ns *string
	if cmd != "status" {
		ns = fs.String("netns", "", "network namespace: a name under /run/netns or a path such as /proc/<pid>/ns/net")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmeshctl %s: unexpected arguments: %v\n", cmd, fs.Args())
		return 2
	}
	method, path := http.MethodGet, "/status"
	if ns != nil {
		if *ns == "" {
			fmt.Fprintf(stderr, "kmeshctl %s: --netns is required\n", cmd)
			return 2
		}
		method, path = http.MethodPost, "/"+cmd+"?netns="+url.QueryEscape(*ns)
	}
	req, err := http.NewRequest(method, "http://"+*addr+path, nil)
	if err != nil {
		fmt.Fprintf(stderr, "kmeshctl %s: %v\n", cmd, err)
		return 2
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "kmeshctl %s: reach the daemon at %s (is kmesh-daemon running? --admin-addr): %v\n", cmd, *addr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			body = []byte(e.Error)
		}
		fmt.Fprintf(stderr, "kmeshctl %s: %s\n", cmd, bytes.TrimSpace(body))
		return 1
	}
	stdout.Write(body)
	return 0
}
