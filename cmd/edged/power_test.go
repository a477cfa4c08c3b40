package main

import (
	"testing"
	"time"
)

// TestEfficiency: images per joule is frames over energy across a window of at least
// powerWindow, kept between windows, and started over when a counter goes back.
func TestEfficiency(t *testing.T) {
	var e efficiency
	t0 := time.Unix(1000, 0)
	if got := e.update(t0, 100, 50); got != 0 {
		t.Fatalf("first sample %v, want 0", got)
	}
	if got := e.update(t0.Add(5*time.Second), 150, 60); got != 0 {
		t.Fatalf("inside the window %v, want 0", got)
	}
	// 400 frames over 80 J.
	if got := e.update(t0.Add(powerWindow), 500, 130); got != 5 {
		t.Fatalf("after the window %v, want 5 images per joule", got)
	}
	if got := e.update(t0.Add(powerWindow+time.Second), 900, 131); got != 5 {
		t.Fatalf("between windows %v, want the last value 5", got)
	}
	// A meter gap restarts the energy count: no figure from across it.
	if got := e.update(t0.Add(3*powerWindow), 1000, 10); got != 5 {
		t.Fatalf("after a reset %v, want the last value kept", got)
	}
	if got := e.update(t0.Add(4*powerWindow), 1200, 50); got != 5 {
		t.Fatalf("200 frames over 40 J: %v, want 5", got)
	}
}
