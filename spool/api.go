// Package spool provides the on-disk result spool: an append-only log of records in
// segment files, each record with its length and checksum, bounded in bytes, that keeps
// what the broker has not acknowledged across outages, crashes and power loss.
//
// Life of a record: Append writes it (durable per the fsync policy); Next hands records
// out in append order to the sender; Ack marks one delivered (the broker's PUBACK);
// the spool forgets records only once they and every record before them are acked.
// Rewind puts every handed-out, unacked record back in line (after a lost connection),
// so they are handed out again in their original order.
//
// On Open the spool scans its folder: a torn tail is cut off and a corrupt record or
// garbage is skipped (resynchronising on the next record marker), each reported with a
// log line and counted; every intact record is kept. Delivery is at least once: which
// records are acked is checkpointed on the fsync schedule, so after a crash some acked
// records may be handed out again (the result's own id lets consumers drop them).
//
// The on-disk format is described in format.go.
package spool

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a spool.
type Options struct {
	// Dir holds the segment files; created if missing.
	Dir string
	// MaxBytes bounds the spool on disk. Past it the oldest segment is dropped and its
	// records counted as dropped (reason "full"); Append never fails for lack of room
	// while at least one segment can be dropped. A record larger than MaxBytes (with its
	// 28-byte header) is refused. 0 means DefaultMaxBytes. When the disk fills up before
	// MaxBytes (ENOSPC, EDQUOT), the oldest segments are dropped in the same way, reason
	// "disk_full", keeping the segment being written to.
	MaxBytes int64
	// SegmentBytes is the size at which a segment is closed and a new one started; at
	// most MaxBytes and MaxSegmentBytes. 0 means MaxBytes/8, at most DefaultSegmentBytes.
	SegmentBytes int64
	// FsyncInterval: 0 syncs every record before Append returns; above 0 syncs at most
	// that long after an append (a background flush owned by the spool).
	// The checkpoint of acked records is written on the same schedule.
	FsyncInterval time.Duration
	// Log receives damage reports and drops; nil means slog.Default().
	Log *slog.Logger
	// Registerer for edged_mqtt_spool_bytes, edged_mqtt_spool_records,
	// edged_mqtt_spool_oldest_age_seconds, edged_mqtt_spool_dropped_total{reason},
	// edged_mqtt_spool_corrupt_total, edged_mqtt_spool_appended_total,
	// edged_mqtt_spool_acked_total; nil registers nothing. Close unregisters them.
	Registerer prometheus.Registerer
}

// Record is one spooled record as handed out by Next.
type Record struct {
	// ID orders records; it is unique within a spool for the life of its folder.
	ID uint64
	// Data is read from disk by Next and belongs to the caller.
	Data []byte
	// Appended is when Append wrote it.
	Appended time.Time
}

// Stats describe the spool now.
type Stats struct {
	Records  int   // not yet acked (handed out or not)
	Bytes    int64 // on disk
	Oldest   time.Time
	Dropped  uint64 // records dropped because the spool (MaxBytes) or the disk was full
	Corrupt  uint64 // records, byte ranges or files found damaged (on Open, or by Next)
	Appended uint64 // since Open, as are Dropped, Corrupt and Acked
	Acked    uint64
}

// The methods of *Spool (in spool.go):
//
//	func Open(o Options) (*Spool, error)  // scans and recovers; starts the flusher if FsyncInterval > 0
//	func (s *Spool) Append(data []byte) error
//	func (s *Spool) Next() (Record, bool) // the next record not handed out yet, in append order
//	func (s *Spool) Ack(id uint64) error  // an id not handed out is an error; one already acked or dropped is a no-op
//	func (s *Spool) Rewind()              // hand out every unacked record again, in order
//	func (s *Spool) Ready() <-chan struct{} // signalled after Append and Rewind
//	func (s *Spool) Len() int             // records not yet acked
//	func (s *Spool) Stats() Stats
//	func (s *Spool) Close() error         // syncs and stops the flusher; safe twice and on nil
