package session_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/galaxy-game/sessioncache/session"
)

var key = base64.StdEncoding.EncodeToString(make([]byte, 32))

// hostile is the seed corpus shared by the fuzz tests of this package.
var hostile = []string{"*", "?", "[a]", "{x}", "a:b", `\`, strings.Repeat("a", 10_000), "a\x00b", "a\r\nb", "\xff\xfe", "", " ", "dev 1", "../x"}

func TestValidateID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"dev-1", true},
		{"A_b.c-9", true},
		{strings.Repeat("a", session.MaxIDLength), true},
		{strings.Repeat("a", session.MaxIDLength+1), false},
		{"", false},
		{"*", false},
		{"a?", false},
		{"[a]", false},
		{"{x}", false},
		{"a:b", false},
		{"a b", false},
		{"a\tb", false},
		{"a\x00", false},
		{"a\r\n", false},
		{"\xff", false},
		{"é", false},
		{`a\b`, false},
		{`"a"`, false},
		{".", false},
		{"..", false},
		{"...", true},
	}
	for _, tt := range tests {
		err := session.ValidateID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil {
			if !errors.Is(err, session.ErrInvalidID) {
				t.Errorf("ValidateID(%q) = %v, want an error wrapping ErrInvalidID", tt.id, err)
			}
			if len(tt.id) > 1 && strings.Contains(err.Error(), tt.id) {
				t.Errorf("ValidateID(%q) error %q contains the id", tt.id, err)
			}
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ in, want string }{{"abcdefgh", "abcd…"}, {"abcd", "…"}, {"", "…"}} {
		if got := session.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRecordValidate(t *testing.T) {
	at := int64(1764415200000)
	neg := int64(-1)
	good := session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusActive}
	tests := []struct {
		name string
		edit func(r *session.Record)
		ok   bool
	}{
		{"active", func(*session.Record) {}, true},
		{"revoked with time", func(r *session.Record) { r.Status, r.RevokedAtMS = session.StatusRevoked, &at }, true},
		{"tombstone", func(r *session.Record) { *r = session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked} }, true},
		{"active without user", func(r *session.Record) { r.UserID = "" }, false},
		{"active without key", func(r *session.Record) { r.ClientPublicKey = "" }, false},
		{"unknown status", func(r *session.Record) { r.Status = "Active" }, false},
		{"empty status", func(r *session.Record) { r.Status = "" }, false},
		{"bad id", func(r *session.Record) { r.DeviceSessionID = "a*" }, false},
		{"bad user", func(r *session.Record) { r.UserID = "{u}" }, false},
		{"31-byte key", func(r *session.Record) { r.ClientPublicKey = base64.StdEncoding.EncodeToString(make([]byte, 31)) }, false},
		{"33-byte key", func(r *session.Record) { r.ClientPublicKey = base64.StdEncoding.EncodeToString(make([]byte, 33)) }, false},
		{"url-safe key", func(r *session.Record) {
			r.ClientPublicKey = base64.URLEncoding.EncodeToString([]byte(strings.Repeat("\xfb", 32)))
		}, false},
		{"unpadded key", func(r *session.Record) { r.ClientPublicKey = strings.TrimRight(key, "=") }, false},
		{"revoked_at on active", func(r *session.Record) { r.RevokedAtMS = &at }, false},
		{"negative revoked_at", func(r *session.Record) { r.Status, r.RevokedAtMS = session.StatusRevoked, &neg }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.edit(&r)
			err := r.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, session.ErrInvalidRecord) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidRecord", err)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	if got := session.StatusRevoked.String(); got != "revoked" {
		t.Errorf("StatusRevoked.String() = %q, want %q", got, "revoked")
	}
	for _, s := range []string{"active", "revoked"} {
		if got, err := session.ParseStatus(s); err != nil || got.String() != s {
			t.Errorf("ParseStatus(%q) = %q, %v; want %q", s, got, err, s)
		}
	}
	for _, s := range []string{"", "ACTIVE", "expired", "active "} {
		if _, err := session.ParseStatus(s); !errors.Is(err, session.ErrInvalidRecord) {
			t.Errorf("ParseStatus(%q) error = %v, want ErrInvalidRecord", s, err)
		}
	}
}

func TestRevoked(t *testing.T) {
	r := session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: key, Status: session.StatusActive}
	got := r.Revoked(5)
	if got.Status != session.StatusRevoked || got.RevokedAtMS == nil || *got.RevokedAtMS != 5 {
		t.Fatalf("Revoked(5) = %+v, want revoked at 5", got)
	}
	if again := got.Revoked(9); *again.RevokedAtMS != 5 {
		t.Fatalf("Revoked(9) of a record revoked at 5 = %d, want 5 kept", *again.RevokedAtMS)
	}
	if r.Status != session.StatusActive {
		t.Fatalf("Revoked changed its receiver")
	}
	if got := r.Revoked(0); got.RevokedAtMS != nil {
		t.Fatalf("Revoked(0).RevokedAtMS = %d, want nil", *got.RevokedAtMS)
	}
}

func TestParseInvalidation(t *testing.T) {
	tests := []struct {
		in   string
		want session.Invalidation
		ok   bool
	}{
		{`{"session":"dev-1"}`, session.Invalidation{SessionID: "dev-1"}, true},
		{`{"user":"u-7"}`, session.Invalidation{UserID: "u-7"}, true},
		{` {"session":"dev-1","seq":41,"stripe":3,"at_ms":1764415200000,"extra":[1]} `,
			session.Invalidation{SessionID: "dev-1", Seq: 41, Stripe: 3, AtMS: 1764415200000}, true},
		{`{"session":"dev-1","user":"u"}`, session.Invalidation{}, false},
		{`{}`, session.Invalidation{}, false},
		{`null`, session.Invalidation{}, false},
		{`[]`, session.Invalidation{}, false},
		{`"dev-1"`, session.Invalidation{}, false},
		{`dev-1`, session.Invalidation{}, false},
		{`{"session":"*"}`, session.Invalidation{}, false},
		{`{"session":"\u002a"}`, session.Invalidation{}, false},
		{`{"session":""}`, session.Invalidation{}, false},
		{`{"session":1}`, session.Invalidation{}, false},
		{`{"session":"a","seq":0}`, session.Invalidation{}, false},
		{`{"session":"a","seq":-1}`, session.Invalidation{}, false},
		{`{"session":"a","stripe":-1}`, session.Invalidation{}, false},
		{`{"session":"a","stripe":100000}`, session.Invalidation{}, false},
		{`{"session":"a","at_ms":-5}`, session.Invalidation{}, false},
		{`{"session":"a"}{"session":"b"}`, session.Invalidation{}, false},
		{`{"session":"a"}}`, session.Invalidation{}, false},
		{`{"session":"a"}]`, session.Invalidation{}, false},
		{"{\"session\":\"a\"}\r\n", session.Invalidation{SessionID: "a"}, true},
		{`{"session":"a","status":"active"}`, session.Invalidation{SessionID: "a"}, true},
		{`{"session":"` + strings.Repeat("a", 2000) + `"}`, session.Invalidation{}, false},
	}
	for _, tt := range tests {
		got, err := session.ParseInvalidation([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseInvalidation(%.60q) = %+v, %v; want %+v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, session.ErrMalformedInvalidation) {
			t.Errorf("ParseInvalidation(%.60q) error = %v, want ErrMalformedInvalidation", tt.in, err)
		}
	}
}

func TestInvalidationRoundTrip(t *testing.T) {
	for _, m := range []session.Invalidation{
		{SessionID: "dev-1"},
		{UserID: "u-7", Seq: 42, Stripe: 0, AtMS: 1764415200100},
		{SessionID: "dev-1", Seq: 41, Stripe: 3, AtMS: 1764415200000},
	} {
		b, err := m.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON(%+v): %v", m, err)
		}
		got, err := session.ParseInvalidation(b)
		if err != nil || got != m {
			t.Errorf("ParseInvalidation(MarshalJSON(%+v)) = %+v, %v", m, got, err)
		}
	}
	const want = `{"session":"dev-1","seq":41,"stripe":3,"at_ms":1764415200000}`
	b, _ := session.Invalidation{SessionID: "dev-1", Seq: 41, Stripe: 3, AtMS: 1764415200000}.MarshalJSON()
	if string(b) != want {
		t.Errorf("MarshalJSON = %s, want %s", b, want)
	}
	for _, bad := range []session.Invalidation{{}, {SessionID: "a", UserID: "b"}, {SessionID: "a*"}, {UserID: "{u}"}} {
		if _, err := bad.MarshalJSON(); err == nil {
			t.Errorf("MarshalJSON(%+v) = nil error, want an error", bad)
		}
	}
}

func FuzzValidateID(f *testing.F) {
	for _, s := range hostile {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if session.ValidateID(id) != nil {
			return
		}
		if len(id) == 0 || len(id) > session.MaxIDLength {
			t.Fatalf("ValidateID accepted %d bytes", len(id))
		}
		if strings.ContainsAny(id, "*?[]\\{}: \t\r\n\x00\"'") {
			t.Fatalf("ValidateID accepted %q", id)
		}
	})
}

func FuzzParseInvalidation(f *testing.F) {
	for _, s := range hostile {
		f.Add([]byte(s))
		f.Add([]byte(`{"session":"` + s + `"}`))
		f.Add([]byte(`{"user":"` + s + `","seq":1}`))
	}
	f.Add([]byte(`{"session":"dev-1","seq":41,"stripe":3,"at_ms":1764415200000}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := session.ParseInvalidation(payload)
		if err != nil {
			if !errors.Is(err, session.ErrMalformedInvalidation) {
				t.Fatalf("error %v does not wrap ErrMalformedInvalidation", err)
			}
			return
		}
		if (m.SessionID == "") == (m.UserID == "") {
			t.Fatalf("accepted %+v: want exactly one id", m)
		}
		if session.ValidateID(m.SessionID+m.UserID) != nil {
			t.Fatalf("accepted an invalid id in %+v", m)
		}
		b, err := m.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON(%+v): %v", m, err)
		}
		if again, err := session.ParseInvalidation(b); err != nil || again != m {
			t.Fatalf("round trip of %+v = %+v, %v", m, again, err)
		}
	})
}

func FuzzRecordValidate(f *testing.F) {
	for _, s := range hostile {
		f.Add("dev-1", "u-1", s, "active")
		f.Add(s, "u-1", key, "revoked")
	}
	f.Fuzz(func(t *testing.T, id, user, pub, status string) {
		r := session.Record{DeviceSessionID: id, UserID: user, ClientPublicKey: pub, Status: session.Status(status)}
		if r.Validate() != nil {
			return
		}
		if r.Status == session.StatusActive {
			raw, err := base64.StdEncoding.DecodeString(r.ClientPublicKey)
			if err != nil || len(raw) != session.PublicKeySize || session.ValidateUserID(r.UserID) != nil {
				t.Fatalf("accepted an active record with a bad key or user: %+v", r)
			}
		}
	})
}

// ValidatePublicKey accepts exactly what strict standard base64 decodes to
// PublicKeySize bytes.
func FuzzValidatePublicKey(f *testing.F) {
	for _, s := range hostile {
		f.Add(s)
	}
	f.Add(key)
	f.Add(key[:42] + "B=")            // unused bits set: strict decoding refuses
	f.Add(key[:43] + "A")             // no padding
	f.Add(key[:20] + "\n" + key[21:]) // a newline, which the decoder skips
	f.Add(key[:42] + "==")            // 31 bytes
	f.Add("/+" + key[2:])             // the two symbols
	f.Fuzz(func(t *testing.T, s string) {
		raw, err := base64.StdEncoding.Strict().DecodeString(s)
		want := err == nil && len(raw) == session.PublicKeySize && len(s) == 44
		if got := session.ValidatePublicKey(s) == nil; got != want {
			t.Fatalf("ValidatePublicKey(%q) accepted = %v, strict decoding says %v", s, got, want)
		}
	})
}

func TestValidatePublicKeyAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = session.ValidatePublicKey(key) }); n != 0 {
		t.Errorf("ValidatePublicKey allocates %v times per call, want 0", n)
	}
}

// BenchmarkParseInvalidation parses the message a revocation publishes:
// every replica parses each one.
func BenchmarkParseInvalidation(b *testing.B) {
	msg := []byte(`{"session":"dev-0123456789abcdef","seq":41123,"stripe":3,"at_ms":1764415200000}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := session.ParseInvalidation(msg); err != nil {
			b.Fatal(err)
		}
	}
}
