package publish

import (
	"cmp"
	"slices"
	"strconv"
	"sync"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// sessionStore is the client's in-memory session store. paho keeps every outgoing QoS 1
// and 2 message here until the broker acknowledges it and re-sends what is left after a
// reconnect, oldest first. It is our own for two reasons:
//   - On reconnect paho completes the token of each re-sent message when it re-sends it,
//     not when the broker acknowledges it; the store's delete is the one reliable sign of
//     the acknowledgement, and waitAck lets the publisher wait for it.
//   - Order: paho's ordered store sorts by timestamp, which ties under bursts; a sequence
//     number does not.
//
// paho opens and closes the store with each connection; the contents must survive that
// (they are the session), so Open and Close change nothing.
type sessionStore struct {
	mu      sync.Mutex
	next    uint64
	entries map[string]storeEntry
	// deleted is closed on the next delete of an outbound entry; nil until someone waits.
	deleted chan struct{}
}

type storeEntry struct {
	seq uint64
	pkt packets.ControlPacket
}

func newSessionStore() *sessionStore {
	return &sessionStore{entries: make(map[string]storeEntry)}
}

func (s *sessionStore) Open()  {}
func (s *sessionStore) Close() {}

func (s *sessionStore) Put(key string, pkt packets.ControlPacket) {
	if pub, ok := pkt.(*packets.PublishPacket); ok {
		// Keep a copy: on reconnect paho sets the DUP flag on the stored packet while
		// the same packet may still be on its way out through the new connection (a
		// publish that was blocked when the old one died).
		cp := *pub
		pkt = &cp
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[key]; ok {
		// A PUBREL replacing its PUBLISH keeps the message's place in the order.
		s.entries[key] = storeEntry{seq: e.seq, pkt: pkt}
		return
	}
	s.next++
	s.entries[key] = storeEntry{seq: s.next, pkt: pkt}
}

func (s *sessionStore) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[key].pkt
}

// All returns the keys oldest first, the order paho re-sends them in.
func (s *sessionStore) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	type keyed struct {
		seq uint64
		key string
	}
	all := make([]keyed, 0, len(s.entries))
	for k, e := range s.entries {
		all = append(all, keyed{e.seq, k})
	}
	slices.SortFunc(all, func(a, b keyed) int { return cmp.Compare(a.seq, b.seq) })
	keys := make([]string, len(all))
	for i, k := range all {
		keys[i] = k.key
	}
	return keys
}

func (s *sessionStore) Del(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[key]; !ok {
		return
	}
	delete(s.entries, key)
	if len(key) > 2 && key[:2] == "o." {
		s.wake()
	}
}

func (s *sessionStore) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.entries)
	s.wake()
}

func (s *sessionStore) wake() {
	if s.deleted != nil {
		close(s.deleted)
		s.deleted = nil
	}
}

// waitAck reports whether the outgoing message with this id still awaits its
// acknowledgement and, if so, a channel closed on the next outbound delete, after which
// the caller asks again. Both come from one look under the lock, so no delete is missed.
func (s *sessionStore) waitAck(mid uint16) (<-chan struct{}, bool) {
	var buf [8]byte
	key := strconv.AppendUint(append(buf[:0], "o."...), uint64(mid), 10)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[string(key)]; !ok {
		return nil, false
	}
	if s.deleted == nil {
		s.deleted = make(chan struct{})
	}
	return s.deleted, true
}
