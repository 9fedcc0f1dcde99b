package main

// sessionctl sign: send one request signed by the gateway's scheme
// (internal/signing) and print the answer, so a person can try the
// reference gateway with curl-like ease.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/galaxy-game/sessioncache/internal/signing"
	"github.com/galaxy-game/sessioncache/session"
)

func init() {
	register("sign", "send one signed request to a gateway and print the answer", runSign)
}

// Limits of sessionctl sign.
const (
	signDefaultTimeout = 10 * time.Second
	// signMaxFile bounds a key or body read from a file.
	signMaxFile = 16 << 20
	// signMaxAnswer bounds the answer printed.
	signMaxAnswer = 1 << 20
)

func runSign(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	keyArg := fs.String("key", "", "the session's Ed25519 private key: standard base64 (64-byte key or 32-byte seed), or @file holding it or holding the JSON answer of the test backend's POST /admin/sessions")
	sid := fs.String("session", "", "device session id (default: the device_session_id of a JSON -key file)")
	rawURL := fs.String("url", "", "request URL, for example http://127.0.0.1:8080/v1/me")
	method := fs.String("method", http.MethodGet, "HTTP method")
	data := fs.String("data", "", "request body, or @file to read it from a file")
	timeout := fs.Duration("timeout", signDefaultTimeout, "bound on the whole request")
	asJSON := fs.Bool("json", false, jsonUsage)
	setUsageStatuses(fs, "sign -key <b64|@file> -session <id> -url <url> [-method GET] [-data body|@file]",
		`Sends one request with the headers `+signing.HeaderSessionID+`, `+signing.HeaderTimestamp+` and `+signing.HeaderSignature+`
(Ed25519 over method, path and query, timestamp and body hash) and prints
the status line and the body. With -json it prints one object: proto,
status, status_code, and body (JSON as it came) or body_text.`, `
exit status:
  0  a 2xx answer
  1  another answer, or no answer (the gateway unreachable, a timeout)
  2  bad usage or input (no request is sent)
`)
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	req, err := buildSignedRequest(ctx, signArgs{key: *keyArg, session: *sid, url: *rawURL, method: *method, data: *data}, time.Now())
	if err != nil {
		report(stderr, "sign", exitUsage, err.Error())
		return exitUsage
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Do(req)
	if err != nil {
		report(stderr, "sign", exitFailure, err.Error())
		return exitFailure
	}
	defer resp.Body.Close()
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, signMaxAnswer))
	code := exitOK
	if readErr != nil || resp.StatusCode/100 != 2 {
		code = exitFailure
	}
	if *asJSON {
		ans := signAnswer{Proto: resp.Proto, Status: resp.Status, StatusCode: resp.StatusCode, Exit: code}
		if json.Valid(body) {
			ans.Body = body
		} else {
			ans.BodyText = string(body)
		}
		if readErr != nil {
			ans.Error = "reading the answer: " + readErr.Error()
		}
		b, err := json.Marshal(ans)
		if err != nil {
			return fail(stderr, "sign", err)
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		fmt.Fprintf(stdout, "%s %s\n", resp.Proto, resp.Status)
		stdout.Write(body)
		if len(body) > 0 && body[len(body)-1] != '\n' {
			fmt.Fprintln(stdout)
		}
	}
	if readErr != nil {
		report(stderr, "sign", exitFailure, "reading the answer: "+readErr.Error())
	}
	return code
}

// signAnswer is sign's -json output.
type signAnswer struct {
	Proto      string          `json:"proto"`
	Status     string          `json:"status"`
	StatusCode int             `json:"status_code"`
	Body       json.RawMessage `json:"body,omitempty"`      // a JSON body, as it came
	BodyText   string          `json:"body_text,omitempty"` // any other body
	Error      string          `json:"error,omitempty"`
	Exit       int             `json:"exit"`
}

// signArgs are the command line of sign.
type signArgs struct {
	key, session, url, method, data string
}

// buildSignedRequest validates the arguments and returns the request,
// signed at now. Its errors are usage errors.
func buildSignedRequest(ctx context.Context, a signArgs, now time.Time) (*http.Request, error) {
	priv, fileSession, err := readSigningKey(a.key)
	if err != nil {
		return nil, err
	}
	if a.session == "" {
		a.session = fileSession
	}
	if a.session == "" {
		return nil, fmt.Errorf("-session is required")
	}
	if err := session.ValidateID(a.session); err != nil {
		return nil, fmt.Errorf("-session: %w", err)
	}
	u, err := url.Parse(a.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-url %q: want an absolute http:// or https:// URL", a.url)
	}
	body, err := readArg(a.data)
	if err != nil {
		return nil, fmt.Errorf("-data: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, a.method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("-method %q: %w", a.method, err)
	}
	signing.SignRequest(req, a.session, priv, now, body)
	return req, nil
}

// readSigningKey parses -key: standard base64 of a 64-byte private key or a
// 32-byte seed, or @file holding that or the test backend's JSON answer
// (which also names the session).
func readSigningKey(arg string) (ed25519.PrivateKey, string, error) {
	if arg == "" {
		return nil, "", fmt.Errorf("-key is required")
	}
	raw, err := readArg(arg)
	if err != nil {
		return nil, "", fmt.Errorf("-key: %w", err)
	}
	text := strings.TrimSpace(string(raw))
	var sessionID string
	if strings.HasPrefix(text, "{") {
		var c createdSession
		if err := json.Unmarshal([]byte(text), &c); err != nil || c.PrivateKey == "" {
			return nil, "", fmt.Errorf("-key: a JSON file must hold private_key (the answer of POST /admin/sessions)")
		}
		text, sessionID = c.PrivateKey, c.DeviceSessionID
	}
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, "", fmt.Errorf("-key: not standard base64")
	}
	switch len(key) {
	case ed25519.PrivateKeySize:
		return ed25519.PrivateKey(key), sessionID, nil
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(key), sessionID, nil
	}
	return nil, "", fmt.Errorf("-key: %d bytes, want an Ed25519 private key (%d) or seed (%d)",
		len(key), ed25519.PrivateKeySize, ed25519.SeedSize)
}

// readArg returns s, or the contents of the file it names as @file.
func readArg(s string) ([]byte, error) {
	name, ok := strings.CutPrefix(s, "@")
	if !ok {
		return []byte(s), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, signMaxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > signMaxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, signMaxFile)
	}
	return b, nil
}
