package dpi

import "sync"

// maxOutstanding bounds a connection's transaction table. Clients poll one request at
// a time or pipeline a few; beyond this the oldest request is forgotten (and counted):
// its answer, should it come, is then an unsolicited response.
const maxOutstanding = 256

// txn is one outstanding request.
type txn struct {
	id       uint16
	function uint8
	live     bool
	parsed   bool // the request parsed clean: its range can be checked against the answer
	table    Table
	address  uint16
	quantity uint16
}

// txTable holds a connection's outstanding requests in arrival order, in a fixed ring:
// no allocation per request. The request goroutine adds, the response goroutine takes.
// Lookups scan from the oldest; with the usual one or few outstanding that is a step or
// two.
type txTable struct {
	mu   sync.Mutex
	ring [maxOutstanding]txn
	head int // index of the oldest slot
	n    int // slots in use, dead ones included, from head
	live int
}

// outstanding reports whether a request with id is in flight.
func (t *txTable) outstanding(id uint16) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < t.n; i++ {
		if e := &t.ring[(t.head+i)%maxOutstanding]; e.live && e.id == id {
			return true
		}
	}
	return false
}

// add records a request; it reports whether the oldest outstanding one had to be
// forgotten to make room.
func (t *txTable) add(e txn) (forgot bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trim()
	if t.n == maxOutstanding {
		forgot = true
		t.ring[t.head].live = false
		t.live--
		t.head = (t.head + 1) % maxOutstanding
		t.n--
		t.trim()
	}
	e.live = true
	t.ring[(t.head+t.n)%maxOutstanding] = e
	t.n++
	t.live++
	return forgot
}

// take removes and returns the oldest outstanding request with id; a duplicate id
// (TransactionIDReuse, forwarded) is then matched by the next response.
func (t *txTable) take(id uint16) (txn, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < t.n; i++ {
		if e := &t.ring[(t.head+i)%maxOutstanding]; e.live && e.id == id {
			e.live = false
			t.live--
			found := *e
			t.trim()
			return found, true
		}
	}
	return txn{}, false
}

// trim drops dead slots at the head, and empties the ring when nothing is live, so
// answered requests free their slots.
func (t *txTable) trim() {
	if t.live == 0 {
		t.head, t.n = 0, 0
		return
	}
	for t.n > 0 && !t.ring[t.head].live {
		t.head = (t.head + 1) % maxOutstanding
		t.n--
	}
}
