package pipeline

import (
	"context"
	"math"
	"time"
)

// The rate controller is additive-increase, multiplicative-decrease, with the decrease
// taken from the measured capacity rather than compounded on the last limit: a source
// the pipeline falls behind on is held just under what the workers get through, so its
// ring drains instead of growing; it climbs back quickly to that mark, then probes above
// it step by step, and is let loose once it no longer uses the limit.
const (
	// congestedAt is the ring occupancy at which a source counts as outrunning its
	// workers.
	congestedAt = 0.5
	// missRatio is the share of deadline misses among finished frames, and dropRatio
	// the share of frames dropped for a full ring among those accepted, that count as
	// congestion. A few drops are what drop_oldest is for; many mean the source sends
	// frames that are never looked at. Under latest, frames replaced by newer ones are
	// the policy at work: only when most are replaced is the source sending far more
	// than is looked at (latestDropRatio).
	missRatio       = 0.02
	dropRatio       = 0.05
	latestDropRatio = 0.5
	// decrease is the share of the capacity a congested source is held to.
	decrease = 0.9
	// increase is the step up per tick above the capacity mark, as a share of the
	// limit, and minStep its floor; below the mark a tick closes a quarter of the gap.
	increase = 0.02
	minStep  = 0.5
	climb    = 0.25
	// minRate is the lowest limit: a stalled model still lets a frame through now and
	// then, to find out when it has recovered.
	minRate = 0.5
	// After liftAfter calm ticks in a row with the limit well above what the source
	// sends, the limit is lifted: the source is back to its own pace. In a row, so that
	// one slow tick of a source that is still held back does not let it loose.
	liftAfter = 20
	liftRatio = 1.5
	// ewma weights the newest tick's rates: enough history that one tick with a GC
	// pause or a preempted worker does not set the limit.
	ewma = 0.3
)

// control is one source's controller state; only the controller goroutine touches it.
type control struct {
	at                                time.Time
	accepted, served, missed, dropped uint64
	arrival, service                  float64
	// prep and finish are the worker stages' busy time counted so far (see
	// source.prepNS).
	prep, finish int64
	// capacity is what the workers could get through if never idle: frames finished
	// per second over the share of the tick they were busy, smoothed.
	capacity float64
	limit    float64
	// idle counts calm ticks in a row with the limit well above the arrival rate.
	idle int
}

// control ticks the rate controller of every source until ctx ends.
func (p *Pipeline) control(ctx context.Context) {
	t := time.NewTicker(p.cfg.ControlInterval)
	defer t.Stop()
	now := p.now()
	for _, s := range p.sources {
		s.ctl.at = now
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := p.now()
			for _, s := range p.sources {
				s.tick(now)
			}
		}
	}
}

func (s *source) tick(now time.Time) {
	c := &s.ctl
	dt := now.Sub(c.at).Seconds()
	if dt <= 0 {
		return
	}
	accepted := s.accepted.Load()
	served := s.published.Load() + s.errs.Load()
	missed := s.droppedStale.Load() + s.late.Load()
	dropped := s.droppedFull.Load()
	dAcc, dServed, dMissed, dDropped := accepted-c.accepted, served-c.served, missed-c.missed, dropped-c.dropped
	c.at, c.accepted, c.served, c.missed, c.dropped = now, accepted, served, missed, dropped
	c.arrival = ewma*float64(dAcc)/dt + (1-ewma)*c.arrival
	// Missed frames were taken off the ring too: they count toward what the workers
	// get through, or a source of stale frames would look like one the workers idle on.
	done := float64(dServed+dMissed) / dt
	c.service = ewma*done + (1-ewma)*c.service
	prep, finish := s.prepNS.Load(), s.finishNS.Load()
	dBusy := max(prep-c.prep, finish-c.finish)
	c.prep, c.finish = prep, finish
	// The busier stage's share of the tick: the workers' capacity is what they did
	// over it. Measured in every tick, not only congested ones, since a source held
	// under its limit (or a latest source whose ring is nearly always empty) leaves the
	// workers idle part of the time, and what they did then says nothing about what
	// they could do.
	full := s.occupancy() >= congestedAt
	if util := float64(dBusy) / (dt * 1e9 * float64(s.workers)); (util > 0.05 || full) && done > 0 {
		inst := done / min(util, 1)
		if full {
			// The ring is at least half full: the workers had work waiting, and what
			// they did is their capacity, whatever the busy share says (on a box whose
			// cores the driver and the broker share, a stage's busy time is not all
			// CPU).
			inst = done
		}
		if c.capacity == 0 {
			c.capacity = inst
		} else {
			c.capacity = ewma*inst + (1-ewma)*c.capacity
		}
	}

	tolerated := dropRatio
	if Policies[s.policy.Load()] == Latest {
		tolerated = latestDropRatio
	}
	congested := full || s.blocked.Load() > 0 ||
		(dDropped > 0 && float64(dDropped) > tolerated*float64(dAcc)) ||
		(dMissed > 0 && float64(dMissed) > missRatio*float64(dServed+dMissed))
	switch {
	case congested:
		c.idle = 0
		var next float64
		switch {
		case done == 0:
			// Nothing finished this tick: a stalled or starting model. Halve what the
			// source may send, and forget a capacity the workers no longer have.
			c.capacity /= 2
			next = c.limit / 2
			if c.limit == 0 {
				next = c.arrival / 2
			}
		case c.capacity > 0:
			next = decrease * c.capacity
		default:
			next = decrease * done
		}
		if c.limit == 0 || next < c.limit {
			c.limit = max(minRate, next)
		}
	case c.limit > 0:
		step := max(minStep, increase*c.limit)
		if gap := decrease*c.capacity - c.limit; gap > 0 {
			step = max(step, climb*gap)
		}
		c.limit += step
		if c.limit > liftRatio*c.arrival {
			c.idle++
		} else {
			c.idle = 0
		}
		if c.idle >= liftAfter {
			c.limit, c.idle = 0, 0
		}
	}
	s.limit.Store(math.Float64bits(c.limit))
	s.arrival.Store(math.Float64bits(c.arrival))
}
