package main

// gatewayd healthcheck: one HTTP GET whose exit status a container
// healthcheck can use. The image is built FROM scratch (no shell, no curl),
// so the check is a subcommand of a binary the image already holds.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Defaults and bounds of gatewayd healthcheck.
const (
	defaultHealthcheckTimeout = 3 * time.Second
	// healthcheckBodyMax is how much of the answer healthcheck prints:
	// Docker keeps about 4 KiB of a check's output.
	healthcheckBodyMax = 2 << 10
)

// runHealthcheck GETs /healthz on the local listen address (or -url) and
// returns 0 when the answer has the wanted status, 1 when it has another
// or none, and 2 on bad usage. It prints the status and the start of the
// body on stdout (a success) or stderr (a failure), where Docker's health
// log picks them up.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gatewayd healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", defaultListen, "the gateway's -listen address; the check GETs /healthz on it through loopback")
	url := fs.String("url", "", "URL to GET instead of the gateway's /healthz (for example another process's health endpoint)")
	status := fs.Int("status", http.StatusOK, "HTTP status that means healthy")
	timeout := fs.Duration("timeout", defaultHealthcheckTimeout, "bound on the whole request")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `usage: gatewayd healthcheck [-listen addr | -url URL] [-status code] [-timeout d]

Exits 0 when GET answers -status, 1 when it answers another status or does
not answer, 2 on bad usage. For a container healthcheck in an image without
a shell:

  healthcheck:
    test: ["CMD", "gatewayd", "healthcheck"]

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gatewayd healthcheck: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "gatewayd healthcheck: -timeout %v: must be positive\n", *timeout)
		return 2
	}
	if *status < 100 || *status > 599 {
		fmt.Fprintf(stderr, "gatewayd healthcheck: -status %d: want an HTTP status, 100 to 599\n", *status)
		return 2
	}
	target := *url
	if target == "" {
		addr, err := loopbackAddr(*listen)
		if err != nil {
			fmt.Fprintf(stderr, "gatewayd healthcheck: %v\n", err)
			return 2
		}
		target = "http://" + addr + "/healthz"
	} else if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		fmt.Fprintf(stderr, "gatewayd healthcheck: -url %q: want an http:// or https:// URL\n", target)
		return 2
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "gatewayd healthcheck: %v\n", err)
		return 2
	}
	// A fresh transport: no proxy from the environment, no connection
	// kept past this one request.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "gatewayd healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, healthcheckBodyMax))
	line := fmt.Sprintf("GET %s: %s %s", target, resp.Status, strings.TrimSpace(string(body)))
	if err != nil {
		fmt.Fprintf(stderr, "gatewayd healthcheck: %s: reading the answer: %v\n", line, err)
		return 1
	}
	if resp.StatusCode != *status {
		fmt.Fprintf(stderr, "gatewayd healthcheck: %s (want %d)\n", line, *status)
		return 1
	}
	fmt.Fprintln(stdout, line)
	return 0
}

// loopbackAddr turns a listen address into one to dial on this host: an
// empty or unspecified host (":8080", "0.0.0.0:8080", "[::]:8080") becomes
// the loopback address of its family; a named host stays.
func loopbackAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("-listen %q: %w", listen, err)
	}
	if port == "" {
		return "", fmt.Errorf("-listen %q: no port", listen)
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}
