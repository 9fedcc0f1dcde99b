// Package backend fetches device sessions from the session backend, the
// system of record, over HTTP:
//
//	GET {BaseURL}/api/v1/internal/sessions/{device_session_id}
//
// A 200 response carries one JSON object. An active session:
//
//	{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"<std base64 of 32 bytes>","status":"active"}
//
// A revoked one, with the revocation time in Unix milliseconds:
//
//	{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"...","status":"revoked","revoked_at_ms":1764415200000}
//
// A revoked record may omit user_id and client_public_key (a tombstone).
// Unknown fields are ignored. The decoded record must pass
// session.Record.Validate and name the requested session; anything else is
// ErrInvalidResponse, never a record. A 404 means the session does not
// exist (session.ErrNotFound); any other status outside 2xx is a
// *StatusError.
//
// An identifier that fails session.ValidateID, or is "." or ".." (which
// cannot be a URL path segment), is rejected with an error wrapping
// session.ErrInvalidID before any request is made. Error strings never contain a full session id or a
// public key.
//
// A Client is safe for concurrent use by multiple goroutines. It starts no
// goroutines of its own beyond those of its HTTP transport.
package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/galaxy-game/sessioncache/session"
)

// PathPrefix is the path of the session endpoint below Options.BaseURL; the
// path-escaped session id follows it.
const PathPrefix = "/api/v1/internal/sessions/"

// Defaults for Options.
const (
	DefaultTimeout          = 2 * time.Second
	DefaultMaxResponseBytes = 64 << 10
)

// drainLimit bounds how much of an unread response body is read and
// discarded so that its connection can be reused; a longer body has its
// connection closed instead.
const drainLimit = 256 << 10

// ErrInvalidResponse reports a 2xx response that does not carry a usable
// record: malformed JSON, a body longer than Options.MaxResponseBytes, a
// record that fails session.Record.Validate, or a record for another
// session.
var ErrInvalidResponse = errors.New("backend: invalid response")

// StatusError reports a response whose status is neither 2xx nor 404.
// Retrieve it with errors.As.
type StatusError struct {
	// StatusCode is the HTTP status the backend returned.
	StatusCode int
}

// Error returns "backend: unexpected HTTP status <code>".
func (e *StatusError) Error() string {
	return fmt.Sprintf("backend: unexpected HTTP status %d", e.StatusCode)
}

// Options configures a Client. Zero fields mean the documented defaults.
type Options struct {
	// BaseURL is the backend's http or https URL, for example
	// "http://127.0.0.1:8080". It may have a path, which PathPrefix
	// follows; it must not have user info, a query or a fragment.
	// Required.
	BaseURL string
	// HTTPClient sends the requests. Default: a client of its own with
	// a transport cloned from http.DefaultTransport (keep-alive, dial and
	// TLS handshake timeouts, proxy from the environment), up to 64 idle
	// connections to the backend, and redirects not followed (a 3xx is a
	// *StatusError).
	HTTPClient *http.Client
	// Timeout bounds each Fetch, within the caller's context. Default
	// DefaultTimeout.
	Timeout time.Duration
	// MaxResponseBytes is the longest response body accepted; a longer
	// one is ErrInvalidResponse. Default DefaultMaxResponseBytes.
	MaxResponseBytes int64
}

// Client fetches session records from the backend.
type Client struct {
	base     string // BaseURL without a trailing slash
	hc       *http.Client
	timeout  time.Duration
	maxBytes int64
}

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	if opts.BaseURL == "" {
		return nil, errors.New("backend: Options.BaseURL is required")
	}
	// The parse error would quote the URL, which may hold a secret.
	u, err := url.Parse(opts.BaseURL)
	if err != nil {
		return nil, errors.New("backend: Options.BaseURL is not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("backend: Options.BaseURL must be an http or https URL")
	case u.Host == "":
		return nil, errors.New("backend: Options.BaseURL has no host")
	case u.User != nil:
		return nil, errors.New("backend: Options.BaseURL must not contain user info")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("backend: Options.BaseURL must not have a query or a fragment")
	case opts.Timeout < 0:
		return nil, fmt.Errorf("backend: negative Options.Timeout %v", opts.Timeout)
	case opts.MaxResponseBytes < 0:
		return nil, fmt.Errorf("backend: negative Options.MaxResponseBytes %d", opts.MaxResponseBytes)
	}
	c := &Client{
		base:     strings.TrimRight(opts.BaseURL, "/"),
		hc:       opts.HTTPClient,
		timeout:  opts.Timeout,
		maxBytes: opts.MaxResponseBytes,
	}
	if c.hc == nil {
		c.hc = newHTTPClient()
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxBytes == 0 {
		c.maxBytes = DefaultMaxResponseBytes
	}
	return c, nil
}

func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 64
	t.MaxIdleConnsPerHost = 64
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// CloseIdleConnections closes the idle keep-alive connections of the
// client's HTTP transport. Connections in use are not interrupted.
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
}

// Fetch returns the backend's record for the device session id.
//
// Errors: an id that fails session.ValidateID, or is "." or "..", wraps
// session.ErrInvalidID (and no request is sent); 404 wraps session.ErrNotFound; another non-2xx
// status is a *StatusError; an unusable 2xx response wraps
// ErrInvalidResponse; a timeout or cancellation wraps the context's error.
// A revoked session is returned as a record with a nil error.
func (c *Client) Fetch(ctx context.Context, id string) (session.Record, error) {
	if err := session.ValidateID(id); err != nil {
		return session.Record{}, fmt.Errorf("backend: fetch: %w", err)
	}
	if id == "." || id == ".." {
		// ValidateID accepts them, but as a path segment they mean "this
		// directory" and "its parent": no server would see the id.
		return session.Record{}, fmt.Errorf("backend: fetch: %w: a dot segment cannot name a session in a URL path", session.ErrInvalidID)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+PathPrefix+url.PathEscape(id), nil)
	if err != nil {
		// Not reached with a validated BaseURL; the error would quote the URL.
		return session.Record{}, fmt.Errorf("backend: fetch %s: cannot build the request", session.Redact(id))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		// A *url.Error quotes the URL, and with it the full id: keep only
		// its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return session.Record{}, fmt.Errorf("backend: fetch %s: %w", session.Redact(id), err)
	}
	defer drainAndClose(resp.Body)

	switch {
	case resp.StatusCode == http.StatusNotFound:
		return session.Record{}, fmt.Errorf("backend: session %s: %w", session.Redact(id), session.ErrNotFound)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return session.Record{}, &StatusError{StatusCode: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return session.Record{}, fmt.Errorf("backend: fetch %s: reading the body: %w", session.Redact(id), err)
	}
	if int64(len(body)) > c.maxBytes {
		return session.Record{}, fmt.Errorf("%w: body longer than %d bytes", ErrInvalidResponse, c.maxBytes)
	}
	rec, err := decodeRecord(body)
	if err != nil {
		return session.Record{}, err
	}
	if rec.DeviceSessionID != id {
		return session.Record{}, fmt.Errorf("%w: record is for another session", ErrInvalidResponse)
	}
	return rec, nil
}

// drainAndClose reads what is left of a body, up to drainLimit, so that
// the transport can reuse the connection, and closes it.
func drainAndClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, drainLimit)
	_ = body.Close()
}

// wireRecord is the JSON shape documented on the package.
type wireRecord struct {
	DeviceSessionID string `json:"device_session_id"`
	UserID          string `json:"user_id,omitempty"`
	ClientPublicKey string `json:"client_public_key,omitempty"`
	Status          string `json:"status"`
	RevokedAtMS     *int64 `json:"revoked_at_ms,omitempty"`
}

// decodeRecord parses one response body. The record it returns passes
// session.Record.Validate; any error wraps ErrInvalidResponse and quotes
// nothing from data.
func decodeRecord(data []byte) (session.Record, error) {
	var w wireRecord
	if err := json.Unmarshal(data, &w); err != nil {
		var syntaxErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntaxErr):
			return session.Record{}, fmt.Errorf("%w: malformed JSON at offset %d", ErrInvalidResponse, syntaxErr.Offset)
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return session.Record{}, fmt.Errorf("%w: field %q has the wrong JSON type", ErrInvalidResponse, typeErr.Field)
		default:
			return session.Record{}, fmt.Errorf("%w: not a JSON object of the expected shape", ErrInvalidResponse)
		}
	}
	rec := session.Record{
		DeviceSessionID: w.DeviceSessionID,
		UserID:          w.UserID,
		ClientPublicKey: w.ClientPublicKey,
		Status:          session.Status(w.Status),
		RevokedAtMS:     w.RevokedAtMS,
	}
	if err := rec.Validate(); err != nil {
		return session.Record{}, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	return rec, nil
}

// EncodeRecord returns r in the JSON shape documented on the package, as
// the backend sends it. Empty UserID and ClientPublicKey (a tombstone) and a
// nil RevokedAtMS are left out. A record that fails session.Record.Validate
// is an error wrapping session.ErrInvalidRecord.
func EncodeRecord(r session.Record) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("backend: encode record: %w", err)
	}
	return json.Marshal(wireRecord{
		DeviceSessionID: r.DeviceSessionID,
		UserID:          r.UserID,
		ClientPublicKey: r.ClientPublicKey,
		Status:          string(r.Status),
		RevokedAtMS:     r.RevokedAtMS,
	})
}
