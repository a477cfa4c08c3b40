package pipeline

import (
	"context"
	"errors"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
)

// ErrClosed is returned by a ring's Push once the ring is closed, and by its Pop once the
// ring is closed and drained.
var ErrClosed = errors.New("ring closed")

// cacheLine is the padding unit that keeps indices written by different goroutines from
// sharing a line, so a push does not invalidate the line the consumer reads from. 64 bytes
// is the line size of amd64 and arm64; padding to 128 against the adjacent-line prefetcher
// measured no better in the ring benchmarks.
const cacheLine = 64

// ringSpins bounds the spin of Push and Pop before they register as waiters and park:
// ringSpins retries, each after a few calls to runtime.Gosched. Waking a parked goroutine
// costs the waker microseconds (readying it, often waking an idle thread), far more than a
// push or pop, and a short spin usually gives the other side time to make room or deliver
// a batch. Each retry waits several yields because every look at the ring pulls the other
// side's cache lines over. A producer facing a full ring waits longer between looks than a
// consumer facing an empty one: the consumer it waits for needs the CPU and its lines to
// drain a batch, while a waiting consumer should have its element soon.
//
// Yields rather than busy pauses, and no fewer of them for producers now that parking is
// cheaper (roomWakeAt): on a 16-core host, busy pauses between looks lowered the SPSC
// benchmark by a third (a consumer looking every few hundred nanoseconds keeps pulling the
// producer's index away from it), and producers that parked after fewer looks lowered the
// four-producer benchmark at GOMAXPROCS=2 by a quarter or more.
const (
	ringSpins      = 4
	ringPushYields = 16
	ringPopYields  = 4
)

// backoff lets other goroutines run between two looks at a ring.
func backoff(yields int) {
	for range yields {
		runtime.Gosched()
	}
}

// contendPause and contendRounds shape the back-off after a lost CAS on a shared index:
// round r (from 0) pauses for a random length in [n/2, 3n/2) iterations of pause, where
// n = contendPause<<r, so about half a microsecond at first, doubling; from round
// contendRounds on, the loser calls runtime.Gosched instead, in case the winner it waits
// for was preempted and needs the CPU.
//
// Several producers on separate cores that retry as soon as they lose each pull the
// index's line over on every attempt: a push then costs several line transfers, each far
// slower than the push itself, and throughput collapses (to a third of a channel's with
// four producers at GOMAXPROCS=8 on a 16-core host). Backing off for much longer than a
// transfer lets whoever won push again while its lines are still in its cache; the
// randomness keeps the losers from coming back in step.
const (
	contendPause  = 1024
	contendRounds = 4
)

// contended backs off after the round-th consecutive lost CAS (see contendPause).
func contended(round int) {
	if round >= contendRounds {
		runtime.Gosched()
		return
	}
	n := contendPause << round
	pause(n/2 + rand.IntN(n))
}

// pause burns about n loop iterations without touching memory, so that a goroutine that
// lost a race stops pulling contended lines away from whoever holds them. The compiler
// keeps the empty loop.
func pause(n int) {
	for i := 0; i < n; i++ {
	}
}

// roomWakeAt is how many slots must be free before a consumer wakes a producer that waits
// for room: a quarter of the ring, at least one. Waking per freed slot would make a slow
// consumer pay a wake-up for every element while the woken producer pushes one and parks
// again; waking at a quarter lets the producer push a burst per wake-up and costs the
// consumer one wake-up per quarter ring. See ringGate for the rules that keep a producer
// from waiting while the ring has room.
func roomWakeAt(capacity int) uint64 { return uint64(max(capacity/4, 1)) }

// ringClosedBit is set in the producer-side index by Close. Keeping it in the same word the
// producers advance makes "closed" and "nothing more will ever be pushed" one atomic fact:
// a push that claims a slot did so before Close, so Pop can report ErrClosed exactly when
// every accepted element has been taken.
const ringClosedBit = 1 << 63

// maxRingCap is the largest power of two an int holds, the most ringSize can round up to.
// Positions are uint64 and count every push since the ring was made; at a billion a
// second they would reach ringClosedBit after about 290 years, so they are never wrapped.
const maxRingCap = 1 << (bits.UintSize - 2)

// ringSize rounds capacity up to a power of two so a position maps to its slot by masking.
// Two is the minimum: with one slot, an MPMC slot's "full for this lap" and "free for the
// next lap" sequence numbers would be equal. SPSC keeps the same minimum so both behave
// alike.
func ringSize(capacity int) int {
	if capacity > maxRingCap {
		panic("pipeline: ring capacity too large")
	}
	if capacity < 2 {
		return 2
	}
	return 1 << bits.Len(uint(capacity-1))
}

// ringGate lets one side of a ring wait for the other without slowing the side that does
// not wait. Waiters count themselves before their last look at the ring and the other side
// looks at the count after publishing its change. Go's sync/atomic operations are
// sequentially consistent, so of "count, then look at the index" and "move the index, then
// look at the count" at least one sees the other's write: either the waiter finds the
// change or the other side finds the waiter. That is the Dekker pattern; without sequential
// consistency both could read stale values and a waiter would sleep through the only change
// it was waiting for.
//
// The channel holds at most one token, so signals collapse; whoever takes a token and makes
// progress passes it on while there is more to take and others still wait.
//
// The two gates of a ring wake on different rules. Consumers, on ready, are woken at once;
// producers, on room, with hysteresis:
//
//   - ready: every push that finds a consumer counted wakes one. Latency matters more than
//     the wake-up: the first element after a quiet spell must not wait.
//   - room, threshold: a pop that finds a producer counted wakes one if, after the pop, at
//     least roomWakeAt slots are free. SPSC counts them from its position and tail; MPMC
//     compares deq with until, the consumer index at which roomWakeAt slots are free
//     counting from the last position a waiting producer found taken.
//   - room, empty: a pop (TryPop or Pop) that finds the ring empty wakes one if any is
//     counted, whatever the threshold.
//   - room, close: Close wakes one, and each producer that sees the close passes it on.
//
// A woken MPMC producer that pushes wakes the next while the next slot is free, so one
// wake-up lets a burst in.
//
// No producer is stranded: once pops stop, a producer counted as waiting stays parked only
// while the ring is not empty and fewer than roomWakeAt slots are free, that is while it
// waits for a consumer that stopped with elements left, as it would at a full ring. Take
// the pop that finishes last. If it finished before the producer's last look, that look
// saw every freed slot and pushed rather than parked; SPSC's look misses only pops not yet
// reported, fewer than batch <= roomWakeAt, so its producer parks only with fewer than
// roomWakeAt free. Otherwise the last pop sees the producer counted (Dekker, above), and
// as every pop before deq has finished, it counts exactly what is free: SPSC's single
// consumer from its own position; MPMC from deq, against an until that came from a
// position some producer found taken, which is no later than where producers are now, so
// until never asks for more than roomWakeAt free slots. The threshold rule then wakes the
// producer, and for an empty ring so does the empty rule. A consumer that pops until
// TryPop fails, as the pipeline's workers do before they wait on Ready, therefore never
// leaves a producer waiting.
type ringGate struct {
	ch chan struct{}
	// waiters counts goroutines about to block on ch, plus one for good once anyone has
	// asked for ch directly (see watch).
	waiters atomic.Int32
	watched atomic.Bool
	// until is used by MPMC's room gate only: the consumer index at which, counting from
	// the producers' index a waiting producer last found full, roomWakeAt slots are free.
	// It sits on this line, which the consumers read anyway, so that they need not read
	// the producers' index, which other producers may be hammering.
	until atomic.Uint64
	_     [cacheLine - 24]byte
}

func (g *ringGate) init() { g.ch = make(chan struct{}, 1) }

// wake leaves a token unless one is already waiting; it never blocks.
func (g *ringGate) wake() {
	select {
	case g.ch <- struct{}{}:
	default:
	}
}

// wakeIfWaiting wakes only when someone besides the caller's own self registrations waits,
// which keeps the common case to one load of a line nobody writes.
func (g *ringGate) wakeIfWaiting(self int32) {
	if g.waiters.Load() > self {
		g.wake()
	}
}

// watch hands out the channel to callers that select on it themselves. Such a caller cannot
// tell the ring when it stops waiting, so the first call counts a permanent waiter: from
// then on every change offers a token, which costs a failed non-blocking send while one is
// already buffered. The first call also leaves a token, because the caller may have looked
// at the ring before it was counted and would otherwise sleep through a change made in
// between.
func (g *ringGate) watch() <-chan struct{} {
	if !g.watched.Load() && g.watched.CompareAndSwap(false, true) {
		g.waiters.Add(1)
		g.wake()
	}
	return g.ch
}

// await blocks until a token arrives or ctx ends. A token it takes is never dropped on the
// way out: it returns ctx.Err() only when the select chose ctx.Done().
func (g *ringGate) await(ctx context.Context) error {
	select {
	case <-g.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// clampLen turns two positions read at slightly different moments into a length within
// [0, capacity].
func clampLen(head, tail, capacity uint64) int {
	if tail <= head {
		return 0
	}
	if n := tail - head; n < capacity {
		return int(n)
	}
	return int(capacity)
}
