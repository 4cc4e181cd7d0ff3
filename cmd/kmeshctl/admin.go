package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

const defaultAdminAddr = "127.0.0.1:15200"

// runAdmin implements the subcommands that talk to a running daemon's admin
// API: enroll, unenroll (POST) and status (GET).
func runAdmin(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kmeshctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin-addr", defaultAdminAddr, "the daemon's admin address")
	var ns, cookie *string
	if cmd != "status" {
		ns = fs.String("netns", "", "network namespace: a name under /run/netns or a path such as /proc/<pid>/ns/net")
	}
	if cmd == "unenroll" {
		cookie = fs.String("cookie", "", "release the namespace with this cookie (as /status lists it), also one that no longer exists")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmeshctl %s: unexpected arguments: %v\n", cmd, fs.Args())
		return 2
	}
	method, path := http.MethodGet, "/status"
	switch {
	case cookie != nil && *cookie != "":
		if *ns != "" {
			fmt.Fprintf(stderr, "kmeshctl %s: give --netns or --cookie, not both\n", cmd)
			return 2
		}
		method, path = http.MethodPost, "/"+cmd+"?cookie="+url.QueryEscape(*cookie)
	case ns != nil:
		if *ns == "" {
			fmt.Fprintf(stderr, "kmeshctl %s: --netns is required%s\n", cmd, map[bool]string{true: " (or --cookie)"}[cookie != nil])
			return 2
		}
		ref := *ns
		if strings.Contains(ref, "/") {
			// the daemon resolves paths in its own working directory
			abs, err := filepath.Abs(ref)
			if err != nil {
				fmt.Fprintf(stderr, "kmeshctl %s: %v\n", cmd, err)
				return 2
			}
			ref = abs
		}
		method, path = http.MethodPost, "/"+cmd+"?netns="+url.QueryEscape(ref)
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
