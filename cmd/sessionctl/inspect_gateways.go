package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/galaxy-game/sessioncache/backend"
	"github.com/galaxy-game/sessioncache/session"
)

// pushTokenEnv gives -push-token its default. It is read when the flag is
// empty, never shown as the flag's default: -h must not print a secret.
const pushTokenEnv = "PUSH_TOKEN"

// debugSessionsPath is gatewayd's debug endpoint: GET <path><id>.
const debugSessionsPath = "/debug/sessions/"

// maxDebugAnswer bounds the body read from a gateway.
const maxDebugAnswer = 64 << 10

// Decisions a gateway answers (gatewayd's /debug/sessions).
const (
	decisionAccept  = "accept"
	decisionRevoked = "reject_revoked"
	decisionUnknown = "reject_unknown"
	decisionError   = "deny_error"
)

// gatewayFlags are inspect's flags that ask the backend and the gateways
// about the session.
type gatewayFlags struct {
	gateways  string
	pushToken string
	backend   string
}

func (g *gatewayFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.gateways, "gateways", "",
		"comma-separated gatewayd base URLs (http://host:port): ask each what it would do with the session now "+
			"(GET "+debugSessionsPath+"<id>, changing no cache); exit status 1 if one would accept a session that Redis "+
			"or the backend calls revoked, or does not answer")
	fs.StringVar(&g.pushToken, "push-token", "", "bearer token of the gateways' debug endpoint: their -push-token (default $"+pushTokenEnv+")")
	fs.StringVar(&g.backend, "backend", os.Getenv(backendEnv),
		"session backend base URL (http[s]://host:port; default $"+backendEnv+"): print its answer for the session")
}

// gatewayUsage is appended to inspect's -h.
const gatewayUsage = `
With -backend (or $` + backendEnv + `), inspect also prints the backend's
answer for the session. With -gateways, it asks each gatewayd what it would
do with the session now and from which tier (GET ` + debugSessionsPath + `<id>,
with -push-token or $` + pushTokenEnv + ` as a bearer token; the gateways'
caches do not change) and prints one row per gateway: its URL, replica name,
decision (accept, reject_revoked, reject_unknown, deny_error), the tier that
decides (l1, l2, backend, none) and what its L1 holds. Exit status 1 when a
gateway would accept a session that Redis or the backend calls revoked, when
a gateway does not answer, or when the backend does not.
`

// askers are the clients the flags describe.
type askers struct {
	gateways []string // base URLs, without a trailing '/'
	token    string
	client   *http.Client
	backend  *backend.Client
}

// open validates the flags and builds the clients; timeout bounds each
// request. Errors wrap errUsage. It sends nothing.
func (g *gatewayFlags) open(timeout time.Duration) (*askers, error) {
	a := &askers{token: g.pushToken}
	if a.token == "" {
		a.token = os.Getenv(pushTokenEnv)
	}
	if g.gateways != "" {
		for _, raw := range strings.Split(g.gateways, ",") {
			raw = strings.TrimSpace(raw)
			u, err := url.Parse(raw)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
				return nil, fmt.Errorf("%w: -gateways: %q is not a base URL such as http://127.0.0.1:8080", errUsage, raw)
			}
			a.gateways = append(a.gateways, strings.TrimSuffix(raw, "/"))
		}
		a.client = &http.Client{
			Timeout: timeout,
			// A gateway answers itself; a redirect is a wrong URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if g.backend != "" {
		// backend.New's errors never quote the URL.
		be, err := backend.New(backend.Options{BaseURL: g.backend, Timeout: timeout})
		if err != nil {
			return nil, fmt.Errorf("%w: -backend: %w", errUsage, err)
		}
		a.backend = be
	}
	return a, nil
}

// close releases idle connections.
func (a *askers) close() {
	if a.client != nil {
		a.client.CloseIdleConnections()
	}
	if a.backend != nil {
		a.backend.CloseIdleConnections()
	}
}

// gatewayState is a gateway's answer, as gatewayd's /debug/sessions sends
// it.
type gatewayState struct {
	Replica            string   `json:"replica,omitempty"`
	Decision           string   `json:"decision,omitempty"`
	Tier               string   `json:"tier,omitempty"`
	L1                 string   `json:"l1,omitempty"`
	L1RevokedAtMS      *int64   `json:"l1_revoked_at_ms,omitempty"`
	L1Distrusted       bool     `json:"l1_distrusted,omitempty"`
	L2                 string   `json:"l2,omitempty"`
	L2Irregular        string   `json:"l2_irregular,omitempty"`
	Backend            string   `json:"backend,omitempty"`
	Errors             []string `json:"errors,omitempty"`
	Subscribed         bool     `json:"subscribed"`
	Tracking           bool     `json:"tracking"`
	RevocationsPending int64    `json:"revocations_pending,omitempty"`
}

// gatewayReport is one row of inspect's gateway table.
type gatewayReport struct {
	URL string `json:"url"`
	gatewayState
	// Error says why the gateway gave no answer; the state is then empty.
	Error string `json:"error,omitempty"`
	// AcceptsRevoked: the gateway would accept a session that Redis or
	// the backend calls revoked.
	AcceptsRevoked bool `json:"accepts_revoked"`
}

// ask fills rep.Backend and rep.Gateways: the backend and the gateways are
// asked concurrently.
func (a *askers) ask(ctx context.Context, rep *inspectReport, id string) {
	var wg sync.WaitGroup
	if a.backend != nil {
		wg.Go(func() {
			b := checkBackend(ctx, a.backend, []string{id})
			rep.Backend = &b
		})
	}
	rep.Gateways = make([]gatewayReport, len(a.gateways))
	for i, base := range a.gateways {
		wg.Go(func() {
			rep.Gateways[i] = gatewayReport{URL: base}
			st, err := a.askGateway(ctx, base, id)
			if err != nil {
				rep.Gateways[i].Error = err.Error()
				return
			}
			rep.Gateways[i].gatewayState = st
		})
	}
	wg.Wait()
	revoked := rep.Found && rep.Invalid == "" && rep.Status == string(session.StatusRevoked) ||
		rep.Backend != nil && rep.Backend.Revoked > 0
	for i := range rep.Gateways {
		rep.Gateways[i].AcceptsRevoked = revoked && rep.Gateways[i].Decision == decisionAccept
	}
}

// askGateway asks one gateway for its state of id. The error is one line,
// without the URL (the table shows it) or the token.
func (a *askers) askGateway(ctx context.Context, base, id string) (gatewayState, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+debugSessionsPath+url.PathEscape(id), nil)
	if err != nil {
		return gatewayState{}, errors.New("bad URL")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return gatewayState{}, errors.New(oneLine(err.Error()))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDebugAnswer))
	if err != nil {
		return gatewayState{}, fmt.Errorf("reading the answer: %s", oneLine(err.Error()))
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		switch {
		case resp.StatusCode == http.StatusUnauthorized && e.Error == "bad push token":
			return gatewayState{}, fmt.Errorf("401: the gateway refused the push token (-push-token or $%s)", pushTokenEnv)
		case resp.StatusCode == http.StatusUnauthorized && e.Error == "missing_session":
			return gatewayState{}, errors.New("401 missing_session: no " + debugSessionsPath + " endpoint there (an older gatewayd, or not a gatewayd)")
		case e.Error != "":
			return gatewayState{}, fmt.Errorf("%s: %s", resp.Status, oneLine(e.Error))
		}
		return gatewayState{}, errors.New(resp.Status)
	}
	var st gatewayState
	if err := json.Unmarshal(body, &st); err != nil {
		return gatewayState{}, fmt.Errorf("the answer is not a session state: %s", oneLine(err.Error()))
	}
	switch st.Decision {
	case decisionAccept, decisionRevoked, decisionUnknown, decisionError:
	default:
		return gatewayState{}, fmt.Errorf("the answer holds an unknown decision %q", st.Decision)
	}
	return st, nil
}

// printGateways prints the backend's answer and the gateway table.
func printGateways(w io.Writer, r inspectReport) {
	if b := r.Backend; b != nil {
		s := "no answer: " + b.Error
		switch {
		case len(b.Active) > 0:
			s = "active"
		case b.Revoked > 0:
			s = "revoked"
		case b.NotFound > 0:
			s = "not found (lookups that find no Redis record deny it)"
		}
		fmt.Fprintf(w, "%-14s%s\n", "backend", s)
	}
	if len(r.Gateways) == 0 {
		return
	}
	accepting, silent := 0, 0
	for _, g := range r.Gateways {
		switch {
		case g.Error != "":
			silent++
		case g.AcceptsRevoked:
			accepting++
		}
	}
	fmt.Fprintf(w, "%-14s%d asked: %d would accept a revoked session, %d did not answer\n", "gateways", len(r.Gateways), accepting, silent)
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  GATEWAY\tREPLICA\tDECISION\tTIER\tL1\tNOTE")
	for _, g := range r.Gateways {
		if g.Error != "" {
			fmt.Fprintf(tw, "  %s\t-\tNO ANSWER\t-\t-\t%s\n", g.URL, g.Error)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", g.URL, g.Replica, g.Decision, g.Tier, g.L1, gatewayNote(g))
	}
	tw.Flush()
	for line := range strings.Lines(table.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n")) // an empty NOTE leaves padding
	}
}

// gatewayNote says what is wrong with a gateway's answer, or why.
func gatewayNote(g gatewayReport) string {
	var notes []string
	if g.AcceptsRevoked {
		notes = append(notes, "ACCEPTS A REVOKED SESSION")
		if !g.Tracking {
			notes = append(notes, "no tracking: hand edits of Redis do not reach its L1")
		}
	}
	if g.L1Distrusted {
		notes = append(notes, "L1 active not trusted: invalidation channel down")
	} else if !g.Subscribed {
		notes = append(notes, "invalidation channel down")
	}
	notes = append(notes, g.Errors...)
	return strings.Join(notes, "; ")
}

// gatewayVerdict prints on stderr, one line each, every gateway that would
// accept a revoked session or did not answer, and a backend that did not
// answer, and returns the exit status they call for: exitFailure, or
// exitOK when there is none.
func gatewayVerdict(stderr io.Writer, r inspectReport) int {
	code := exitOK
	if b := r.Backend; b != nil {
		switch {
		case b.Failed > 0:
			fmt.Fprintf(stderr, "sessionctl inspect: the backend did not answer: %s\n", b.Error)
			code = exitFailure
		case len(b.Active) > 0 && r.Status == string(session.StatusRevoked):
			fmt.Fprintf(stderr, "sessionctl inspect: WARNING: the backend still answers active for %s: "+
				"the revocation lives only in Redis and is lost with the record (flush, eviction, restart without persistence, DEL) "+
				"until the backend revokes the session too\n", r.Session)
		}
	}
	for _, g := range r.Gateways {
		switch {
		case g.Error != "":
			fmt.Fprintf(stderr, "sessionctl inspect: gateway %s did not answer: %s\n", g.URL, g.Error)
			code = exitFailure
		case g.AcceptsRevoked:
			fmt.Fprintf(stderr, "sessionctl inspect: gateway %s (%s) would ACCEPT session %s, which %s calls revoked (answered from %s)\n",
				g.URL, g.Replica, r.Session, revokedBy(r), g.Tier)
			code = exitFailure
		}
	}
	return code
}

// revokedBy names who calls the session revoked.
func revokedBy(r inspectReport) string {
	redis := r.Status == string(session.StatusRevoked)
	be := r.Backend != nil && r.Backend.Revoked > 0
	switch {
	case redis && be:
		return "Redis and the backend"
	case be:
		return "the backend"
	}
	return "Redis"
}
