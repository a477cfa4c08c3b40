package dpi

import (
	"encoding/hex"
	"sync"
	"time"
)

// Alert is one anomaly as published; the JSON names are the alert payload's.
type Alert struct {
	Proxy    string `json:"proxy"`    // Config.Name
	Class    string `json:"class"`    // a Class
	Severity string `json:"severity"` // the class's Severity
	Action   string `json:"action"`   // what was done with the frame: "alert" (forwarded) or "block"
	Client   string `json:"client"`   // the client's ip:port
	Unit     uint8  `json:"unit"`
	Function uint8  `json:"function"` // as on the wire, exception bit included
	// Table, Address and Quantity are the request's range (for a response, its
	// request's, when one was outstanding); Table is "none" without one.
	Table      string    `json:"table"`
	Address    uint16    `json:"address"`
	Quantity   uint16    `json:"quantity"`
	Direction  string    `json:"direction"` // "request" or "response"
	Reason     string    `json:"reason"`    // what is wrong, in words
	Excerpt    string    `json:"excerpt"`   // hex of the frame's first bytes (at most 32)
	Time       time.Time `json:"time"`
	Suppressed int       `json:"suppressed"` // alerts of this class and client held back since the previous one
}

// maxExcerpt bounds the bytes of a frame an alert carries.
const maxExcerpt = 32

func excerpt(b []byte) string {
	return hex.EncodeToString(b[:min(len(b), maxExcerpt)])
}

// limiter lets one alert per (class, client IP) through per period and counts the
// ones it holds back. Its table is bounded: clients come and go, and an attacker could
// otherwise grow it with new addresses.
type limiter struct {
	every time.Duration
	mu    sync.Mutex
	keys  map[limitKey]*limitState
	swept time.Time // the last sweep: at most one per period, so a full table costs no scan per alert
}

type limitKey struct {
	class Class
	ip    string
}

type limitState struct {
	last       time.Time
	suppressed int
}

// maxLimitKeys bounds the limiter's table.
const maxLimitKeys = 4096

func newLimiter(every time.Duration) *limiter {
	return &limiter{every: every, keys: make(map[limitKey]*limitState)}
}

// allow reports whether an alert of class for ip may go out at now, and how many were
// held back since the last one that did.
func (l *limiter) allow(class Class, ip string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := limitKey{class, ip}
	st := l.keys[k]
	if st == nil {
		if len(l.keys) >= maxLimitKeys && now.Sub(l.swept) >= l.every {
			l.sweep(now)
			l.swept = now
		}
		if len(l.keys) >= maxLimitKeys {
			// Still full of live keys: let the alert through untracked rather than
			// let new addresses silence alerts.
			return true, 0
		}
		l.keys[k] = &limitState{last: now}
		return true, 0
	}
	if now.Sub(st.last) < l.every {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return true, n
}

// sweep forgets keys whose period has passed; their held-back counts are lost, but the
// anomalies were counted in the metrics already.
func (l *limiter) sweep(now time.Time) {
	for k, st := range l.keys {
		if now.Sub(st.last) >= l.every {
			delete(l.keys, k)
		}
	}
}
