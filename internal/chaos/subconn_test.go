package chaos

import (
	"strconv"
	"testing"
)

func TestFrameLen(t *testing.T) {
	msg := "*3\r\n$7\r\nmessage\r\n$20\r\nsession_invalidation\r\n$27\r\n{\"session\":\"dev-1\",\"seq\":7}\r\n"
	push := ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"
	tests := []struct {
		in      string
		n       int
		ok, bad bool
	}{
		{"+PONG\r\n", 7, true, false},
		{"+PONG\r\n+OK\r\n", 7, true, false},
		{"+PO", 0, false, false},
		{"$5\r\nhello\r\n", 11, true, false},
		{"$5\r\nhel", 0, false, false},
		{"$-1\r\n", 5, true, false},
		{"*2\r\n$1\r\na\r\n:1\r\n", 15, true, false},
		{"*2\r\n$1\r\na\r\n", 0, false, false},
		{"%1\r\n+k\r\n+v\r\n", 12, true, false},
		{msg, len(msg), true, false},
		{push, len(push), true, false},
		{"?junk\r\n", 0, false, true},
		{"$x\r\n", 0, false, true},
	}
	for _, tc := range tests {
		n, ok, bad := frameLen([]byte(tc.in))
		if n != tc.n || ok != tc.ok || bad != tc.bad {
			t.Errorf("frameLen(%q) = %d, %v, %v; want %d, %v, %v", tc.in, n, ok, bad, tc.n, tc.ok, tc.bad)
		}
	}
	kind, channel, payload, ok := parseMessage([]byte(msg))
	if !ok || kind != "message" || channel != "session_invalidation" || string(payload) != `{"session":"dev-1","seq":7}` {
		t.Errorf("parseMessage(%q) = %q, %q, %q, %v", msg, kind, channel, payload, ok)
	}
	if _, _, _, ok := parseMessage([]byte("+PONG\r\n")); ok {
		t.Errorf("parseMessage(+PONG) ok, want not a message")
	}
}

func TestSubControlDropsOnlyNumberedMessages(t *testing.T) {
	ctl := NewSubControl("session_invalidation")
	ctl.DropNext(1)
	frame := func(payload string) []byte {
		return []byte("*3\r\n$7\r\nmessage\r\n$20\r\nsession_invalidation\r\n$" + strconv.Itoa(len(payload)) + "\r\n" + payload + "\r\n")
	}
	if ctl.shouldDrop(frame(`{"session":"dev-1"}`)) {
		t.Error("dropped a hand-typed message without a sequence number")
	}
	if ctl.shouldDrop([]byte("+PONG\r\n")) {
		t.Error("dropped a PONG")
	}
	if !ctl.shouldDrop(frame(`{"session":"dev-1","seq":3}`)) {
		t.Error("kept the numbered message it was told to drop")
	}
	if ctl.shouldDrop(frame(`{"session":"dev-2","seq":4}`)) {
		t.Error("dropped a second message after DropNext(1)")
	}
	if n := ctl.Dropped(); n != 1 {
		t.Errorf("Dropped() = %d, want 1", n)
	}
}
