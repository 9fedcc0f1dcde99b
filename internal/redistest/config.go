package redistest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// secureConfig validates the TLS and ACL options, remembers what clients
// need (CA, password), writes the ACL file, and returns the redis.conf lines
// for them. Later lines win in redis.conf, so "port 0" here overrides the
// plain port that Start wrote before it.
func (s *Server) secureConfig(opts Options) []string {
	s.tb.Helper()
	var lines []string
	if opts.TLS != nil {
		s.ca = opts.TLS
		s.TLSAddr = s.Addr
		lines = append(lines,
			"port 0",
			"tls-port "+strconv.Itoa(s.Port),
			"tls-cert-file "+opts.TLS.CertFile(),
			"tls-key-file "+opts.TLS.KeyFile(),
			"tls-ca-cert-file "+opts.TLS.CAFile(),
			"tls-auth-clients no",
		)
	}
	if opts.Password != "" {
		if !validPassword(opts.Password) {
			s.tb.Fatalf("redistest: Options.Password must be printable ASCII without spaces, quotes or '>' and '<'")
		}
		s.password = opts.Password
	}
	switch {
	case opts.ACLFile != "":
		acl := opts.ACLFile
		if opts.Password != "" {
			if definesDefaultUser(acl) {
				s.tb.Fatalf("redistest: Options.Password and an ACLFile that defines the default user conflict: set one")
			}
			acl = "user default on >" + opts.Password + " ~* &* +@all\n" + acl
		}
		path := filepath.Join(s.dir, "users.acl")
		if err := os.WriteFile(path, []byte(acl), 0o600); err != nil {
			s.tb.Fatalf("redistest: write ACL file: %v", err)
		}
		lines = append(lines, "aclfile "+path)
	case opts.Password != "":
		lines = append(lines, "requirepass "+opts.Password)
	}
	return lines
}

// validPassword reports whether p can be written unquoted in redis.conf and
// in an ACL rule.
func validPassword(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\'' || c == '<' || c == '>' || c == '\\' {
			return false
		}
	}
	return true
}

func definesDefaultUser(acl string) bool {
	for line := range strings.Lines(acl) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "user" && f[1] == "default" {
			return true
		}
	}
	return false
}

// alive reports whether the process was started and not killed since.
func (s *Server) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}
