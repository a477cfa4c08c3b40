package pipeline

import (
	"context"
	"math"
	"time"
)

// The rate controller is additive-increase, multiplicative-decrease, with the decrease
// taken from the measured service rate rather than compounded on the last limit: a
// source the pipeline falls behind on is held just under what the workers finish, so
// its ring drains instead of growing, and is let back up step by step when it keeps up.
const (
	// congestedAt is the ring occupancy at which a source counts as outrunning its
	// workers.
	congestedAt = 0.5
	// missRatio is the share of deadline misses among finished frames that counts as
	// congestion, even with a calm ring (a slow model rather than a fast source).
	missRatio = 0.02
	// decrease is the share of the service rate a congested source is held to.
	decrease = 0.9
	// increase is the step up per tick, as a share of the limit, and minStep its floor.
	increase = 0.02
	minStep  = 0.5
	// minRate is the lowest limit: a stalled model still lets a frame through now and
	// then, to find out when it has recovered.
	minRate = 0.5
	// liftAfter calm ticks with the limit well above what the source sends, the limit
	// is lifted: the source is back to its own pace.
	liftAfter = 20
	liftRatio = 1.5
	// ewma weights the newest tick's rates.
	ewma = 0.5
)

// control is one source's controller state; only the controller goroutine touches it.
type control struct {
	at                                time.Time
	accepted, served, missed, dropped uint64
	arrival, service                  float64
	limit                             float64
	calm                              int
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
	c.service = ewma*float64(dServed+dMissed)/dt + (1-ewma)*c.service

	congested := s.occupancy() >= congestedAt || dDropped > 0 || s.blocked.Load() > 0 ||
		(dMissed > 0 && float64(dMissed) > missRatio*float64(dServed+dMissed))
	switch {
	case congested:
		c.calm = 0
		next := decrease * c.service
		if next <= 0 {
			next = decrease * c.arrival
		}
		if c.limit == 0 || next < c.limit {
			c.limit = max(minRate, next)
		}
	case c.limit > 0:
		c.calm++
		c.limit += max(minStep, increase*c.limit)
		if c.calm >= liftAfter && c.limit > liftRatio*c.arrival {
			c.limit = 0
		}
	}
	s.limit.Store(math.Float64bits(c.limit))
	s.arrival.Store(math.Float64bits(c.arrival))
}
