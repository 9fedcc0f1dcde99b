// Package subscriber is the receiving side of the invalidation channel
// that package rediscache publishes on, for package tiered. A Subscriber's
// Run subscribes to the channel and hands each invalidation to a callback,
// in order, from its own loop.
// It does not trust go-redis's silent reconnects: any receive error, a
// heartbeat PING whose PONG does not come back within HeartbeatTimeout, or
// a second subscription confirmation is a loss (EventLost), after which Run
// opens a new connection. After every confirmation, before any further
// message, it syncs: it replays from each stripe's log what it missed
// (EventSynced with Replayed), or, when the log no longer reaches back far
// enough, the counter went back, or the position is 0 (no log entry
// anchors it), reports EventSynced with DropActive so the caller drops its
// L1 "active" entries. A sequence gap in live traffic is replayed the same
// way.
//
// Changes to session keys that no message announces (an operator's HSET or
// DEL, expiry, eviction, FLUSHDB) reach the subscriber through Redis's
// server-assisted invalidation: each subscriber connection runs CLIENT
// TRACKING ON REDIRECT <itself> BCAST PREFIX <prefix>session: before it
// subscribes, and passes the ids of changed keys to OnKeysChanged. On a
// cluster, one tracker connection per master does the same. Nothing can
// replay what a lost tracking connection missed, so with tracking every
// resync after a loss drops the active L1 entries; a flush is such a loss.
// A Redis that refuses CLIENT TRACKING (miniredis, an ACL without it) is
// logged once, reported in Stats.Tracking, and the subscriber runs on the
// channel alone.
package subscriber
