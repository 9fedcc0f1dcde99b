package backend

import (
	"bytes"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/galaxy-game/sessioncache/session"
)

// testKey is the standard base64 of the 32 bytes 0, 1, ..., 31.
var testKey = func() string {
	var raw [session.PublicKeySize]byte
	for i := range raw {
		raw[i] = byte(i)
	}
	return base64.StdEncoding.EncodeToString(raw[:])
}()

func int64p(v int64) *int64 { return &v }

func TestDecodeRecord(t *testing.T) {
	tests := []struct {
		name string
		body string
		want session.Record
	}{
		{
			name: "active",
			body: `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"active"}`,
			want: session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusActive},
		},
		{
			name: "revoked",
			body: `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"revoked","revoked_at_ms":1764415200000}`,
			want: session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusRevoked, RevokedAtMS: int64p(1764415200000)},
		},
		{
			name: "tombstone",
			body: `{"device_session_id":"dev-1","status":"revoked"}`,
			want: session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked},
		},
		{
			name: "extra fields and whitespace",
			body: "\r\n{\"device_session_id\":\"dev-1\",\"user_id\":\"u-1\",\"client_public_key\":\"" + testKey +
				"\",\"status\":\"active\",\"created_at\":\"2025-01-01\",\"meta\":{\"a\":[1,2]},\"revoked_at_ms\":null}\n",
			want: session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusActive},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeRecord([]byte(tt.body))
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("decodeRecord(%q) = %+v, %v, want %+v, nil", tt.body, got, err, tt.want)
			}
		})
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"empty", ``},
		{"null", `null`},
		{"array", `[]`},
		{"truncated", `{"device_session_id":`},
		{"trailing data", `{"device_session_id":"dev-1","status":"revoked"} {}`},
		{"unknown status", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"suspended"}`},
		{"missing status", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `"}`},
		{"short key", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"AAAA","status":"active"}`},
		{"key of 33 bytes", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` +
			base64.StdEncoding.EncodeToString(make([]byte, 33)) + `","status":"active"}`},
		{"url base64 key", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` +
			base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16)) + `","status":"active"}`},
		{"unpadded key", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` +
			base64.RawStdEncoding.EncodeToString(make([]byte, 32)) + `","status":"active"}`},
		{"active without key", `{"device_session_id":"dev-1","user_id":"u-1","status":"active"}`},
		{"active without user", `{"device_session_id":"dev-1","client_public_key":"` + testKey + `","status":"active"}`},
		{"revoked_at_ms on active", `{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"active","revoked_at_ms":1}`},
		{"negative revoked_at_ms", `{"device_session_id":"dev-1","status":"revoked","revoked_at_ms":-1}`},
		{"fractional revoked_at_ms", `{"device_session_id":"dev-1","status":"revoked","revoked_at_ms":1.5}`},
		{"status of wrong type", `{"device_session_id":"dev-1","status":1}`},
		{"glob id", `{"device_session_id":"dev-*","status":"revoked"}`},
		{"hash tag id", `{"device_session_id":"{x}","status":"revoked"}`},
		{"empty id", `{"device_session_id":"","status":"revoked"}`},
		{"invalid UTF-8 id", "{\"device_session_id\":\"dev-\xff\",\"status\":\"revoked\"}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeRecord([]byte(tt.body))
			if !errors.Is(err, ErrInvalidResponse) || !reflect.DeepEqual(got, session.Record{}) {
				t.Fatalf("decodeRecord(%q) = %+v, %v, want a zero record and ErrInvalidResponse", tt.body, got, err)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("decodeRecord(%q) error %q contains the key", tt.body, err)
			}
		})
	}
}

func TestEncodeRecordRoundTrip(t *testing.T) {
	records := []session.Record{
		{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusActive},
		{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusRevoked, RevokedAtMS: int64p(1764415200000)},
		{DeviceSessionID: "dev-1", Status: session.StatusRevoked},
	}
	for _, rec := range records {
		b, err := EncodeRecord(rec)
		if err != nil {
			t.Fatalf("EncodeRecord(%+v) = %v", rec, err)
		}
		got, err := decodeRecord(b)
		if err != nil || !reflect.DeepEqual(got, rec) {
			t.Errorf("decodeRecord(EncodeRecord(%+v)) = %+v, %v, want the record", rec, got, err)
		}
	}
}

func TestEncodeRecordShape(t *testing.T) {
	tests := []struct {
		rec  session.Record
		want string
	}{
		{
			session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusActive},
			`{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"active"}`,
		},
		{
			session.Record{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: session.StatusRevoked, RevokedAtMS: int64p(1764415200000)},
			`{"device_session_id":"dev-1","user_id":"u-1","client_public_key":"` + testKey + `","status":"revoked","revoked_at_ms":1764415200000}`,
		},
		{
			session.Record{DeviceSessionID: "dev-1", Status: session.StatusRevoked},
			`{"device_session_id":"dev-1","status":"revoked"}`,
		},
	}
	for _, tt := range tests {
		got, err := EncodeRecord(tt.rec)
		if err != nil || string(got) != tt.want {
			t.Errorf("EncodeRecord(%+v) = %s, %v, want %s", tt.rec, got, err, tt.want)
		}
	}
}

func TestEncodeRecordRejectsInvalid(t *testing.T) {
	records := []session.Record{
		{},
		{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: testKey, Status: "suspended"},
		{DeviceSessionID: "dev-1", UserID: "u-1", ClientPublicKey: "AAAA", Status: session.StatusActive},
		{DeviceSessionID: "dev-*", Status: session.StatusRevoked},
	}
	for _, rec := range records {
		got, err := EncodeRecord(rec)
		if !errors.Is(err, session.ErrInvalidRecord) || got != nil {
			t.Errorf("EncodeRecord(%+v) = %q, %v, want nil, ErrInvalidRecord", rec, got, err)
		}
	}
}

// FuzzDecode feeds arbitrary bodies to the response decoder: it must never
// panic, must reject with ErrInvalidResponse, and a record it accepts must
// pass Validate and survive an EncodeRecord round trip.
func FuzzDecode(f *testing.F) {
	record := func(id, user, key, status, extra string) string {
		return `{"device_session_id":"` + id + `","user_id":"` + user + `","client_public_key":"` + key + `","status":"` + status + `"` + extra + `}`
	}
	long := strings.Repeat("a", 10<<10)
	seeds := []string{
		record("dev-1", "u-1", testKey, "active", ""),
		record("dev-1", "u-1", testKey, "revoked", `,"revoked_at_ms":1764415200000`),
		`{"device_session_id":"dev-1","status":"revoked"}`,
		record("dev-1", "u-1", testKey, "active", `,"extra":{"nested":[1,"x",null]}`),
		record("*", "u-1", testKey, "active", ""),
		record("?", "u-1", testKey, "active", ""),
		record("[a]", "u-1", testKey, "active", ""),
		record("{x}", "u-1", testKey, "active", ""),
		record(long, "u-1", testKey, "active", ""),
		record("dev-1", long, testKey, "active", ""),
		record("dev\x00", "u-1", testKey, "active", ""),
		record(`dev\u0000`, "u-1", testKey, "active", ""),
		record("dev\r\n", "u-1", testKey, "active", ""),
		record("dev\xff\xfe", "u-1", testKey, "active", ""),
		record("dev-1", "u-1", testKey[:40]+"****", "active", ""),
		record("dev-1", "u-1", testKey, "ACTIVE", ""),
		record("dev-1", "u-1", testKey, "active", `,"revoked_at_ms":-1`),
		"*", "?", "[a]", "{x}", long, "\x00", "\r\n", "\xff\xfe\xfd", "", "null", "{}", "[]", `"active"`,
		`{"device_session_id":`,
		`{"device_session_id":"dev-1","status":"revoked"}trailing`,
		`{"revoked_at_ms":1e400}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec, err := decodeRecord(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("decodeRecord(%q) error %v does not wrap ErrInvalidResponse", body, err)
			}
			if !reflect.DeepEqual(rec, session.Record{}) {
				t.Fatalf("decodeRecord(%q) = %+v with error %v, want a zero record", body, rec, err)
			}
			return
		}
		if verr := rec.Validate(); verr != nil {
			t.Fatalf("decodeRecord(%q) accepted %+v, which fails Validate: %v", body, rec, verr)
		}
		enc, err := EncodeRecord(rec)
		if err != nil {
			t.Fatalf("EncodeRecord(%+v) = %v after decodeRecord accepted it", rec, err)
		}
		again, err := decodeRecord(enc)
		if err != nil || !reflect.DeepEqual(again, rec) {
			t.Fatalf("decodeRecord(EncodeRecord(%+v)) = %+v, %v, want the record", rec, again, err)
		}
	})
}
