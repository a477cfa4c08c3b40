package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// On-disk format.
//
// A segment file, named by the ID of its first record in 20 decimal digits
// (00000000000000000001.seg), is a sequence of records, all integers little-endian:
//
//	offset size
//	0      4    magic ED 5B 4F A7
//	4      4    payload length n (at most maxPayload)
//	8      4    CRC-32C (Castagnoli) over bytes 4..8 and 12..28+n
//	12     8    record ID
//	20     8    append time, Unix nanoseconds
//	28     n    payload
//
// The magic starts with 0xED followed by a byte below 0x80, which never occurs in
// UTF-8 text, so a JSON payload cannot contain a false marker; recovery scans for it
// to find the next record after damage. The CRC covers the length, so a flipped
// length is caught rather than followed.
//
// The checkpoint file holds the acked watermark (every ID below it is acked):
//
//	0  8  "edgedck1"
//	8  8  watermark
//	16 4  CRC-32C over bytes 0..16
//
// It is replaced by writing checkpoint.tmp, fsync, rename, fsync of the folder.

const (
	headerSize = 28
	// maxPayload caps one record. It bounds what a corrupt length field can make us
	// read, and is far above any result payload.
	maxPayload = 16 << 20
	// maxID bounds IDs read from disk: a forged record with an ID near 2^64 would
	// otherwise make the next ID wrap.
	maxID = 1 << 62

	segSuffix      = ".seg"
	segNameDigits  = 20
	corruptSuffix  = ".corrupt"
	checkpointName = "checkpoint"
	checkpointTemp = "checkpoint.tmp"
	checkpointSize = 20
)

var (
	magic          = [4]byte{0xED, 0x5B, 0x4F, 0xA7}
	checkpointMark = [8]byte{'e', 'd', 'g', 'e', 'd', 'c', 'k', '1'}
	castagnoli     = crc32.MakeTable(crc32.Castagnoli)
)

func segName(first uint64) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, first, segSuffix)
}

// appendFrame appends the framed record to dst.
func appendFrame(dst []byte, id uint64, ts int64, data []byte) []byte {
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(data)))
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint64(dst, id)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(ts))
	dst = append(dst, data...)
	binary.LittleEndian.PutUint32(dst[start+8:], frameCRC(dst[start:]))
	return dst
}

// frameCRC is the checksum of a whole frame b (header and payload), which the caller
// has checked is at least headerSize long.
func frameCRC(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b[4:8])
	return crc32.Update(c, castagnoli, b[12:])
}

// header is a parsed record header.
type header struct {
	n   int // payload length
	crc uint32
	id  uint64
	ts  int64
}

// parseHeader reads a header from b (at least headerSize bytes) and checks the
// marker and the length bound; the CRC needs the payload and is the caller's.
func parseHeader(b []byte) (header, bool) {
	if len(b) < headerSize || !bytes.Equal(b[:4], magic[:]) {
		return header{}, false
	}
	n := binary.LittleEndian.Uint32(b[4:8])
	if n > maxPayload {
		return header{}, false
	}
	return header{
		n:   int(n),
		crc: binary.LittleEndian.Uint32(b[8:12]),
		id:  binary.LittleEndian.Uint64(b[12:20]),
		ts:  int64(binary.LittleEndian.Uint64(b[20:28])),
	}, true
}

func encodeCheckpoint(wm uint64) []byte {
	b := make([]byte, 0, checkpointSize)
	b = append(b, checkpointMark[:]...)
	b = binary.LittleEndian.AppendUint64(b, wm)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeCheckpoint(b []byte) (uint64, error) {
	if len(b) != checkpointSize {
		return 0, fmt.Errorf("%d bytes, want %d", len(b), checkpointSize)
	}
	if !bytes.Equal(b[:8], checkpointMark[:]) {
		return 0, errors.New("bad marker")
	}
	if crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
		return 0, errors.New("checksum mismatch")
	}
	wm := binary.LittleEndian.Uint64(b[8:16])
	if wm > maxID {
		return 0, fmt.Errorf("watermark %d out of range", wm)
	}
	return wm, nil
}

// window reads a file through a sliding buffer, so a scan costs few system calls and
// never holds more than the largest record (plus a chunk) in memory.
type window struct {
	r    io.ReaderAt
	size int64
	off  int64
	buf  []byte
}

const windowChunk = 256 << 10

// at returns n bytes at off; the caller has checked that off+n <= size. The slice is
// valid until the next call.
func (w *window) at(off int64, n int) ([]byte, error) {
	if off >= w.off && off+int64(n) <= w.off+int64(len(w.buf)) {
		return w.buf[off-w.off : off-w.off+int64(n)], nil
	}
	want := int64(max(n, windowChunk))
	want = min(want, w.size-off)
	if int64(cap(w.buf)) < want {
		w.buf = make([]byte, want)
	}
	w.buf = w.buf[:want]
	w.off = off
	got, err := w.r.ReadAt(w.buf, off)
	if got == len(w.buf) {
		return w.buf[:n], nil
	}
	w.buf = w.buf[:0]
	if err == nil || errors.Is(err, io.EOF) {
		// The file shrank under us.
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// record reports whether a whole, checksummed record starts at off.
func (w *window) record(off int64) (header, bool, error) {
	if w.size-off < headerSize {
		return header{}, false, nil
	}
	b, err := w.at(off, headerSize)
	if err != nil {
		return header{}, false, err
	}
	h, ok := parseHeader(b)
	if !ok || int64(h.n) > w.size-off-headerSize {
		return header{}, false, nil
	}
	b, err = w.at(off, headerSize+h.n)
	if err != nil {
		return header{}, false, err
	}
	return h, frameCRC(b) == h.crc, nil
}

// nextMagic returns the offset of the next marker at or after from, or -1.
func (w *window) nextMagic(from int64) (int64, error) {
	for from < w.size {
		n := int(min(int64(windowChunk), w.size-from))
		b, err := w.at(from, n)
		if err != nil {
			return -1, err
		}
		if i := bytes.Index(b, magic[:]); i >= 0 {
			return from + int64(i), nil
		}
		if from+int64(n) == w.size {
			break
		}
		from += int64(n - (len(magic) - 1))
	}
	return -1, nil
}

// looksTorn reports whether the bytes from off to the end are the start of one record
// cut short: what a crash in the middle of an append leaves.
func (w *window) looksTorn(off int64) (bool, error) {
	rem := w.size - off
	k := int(min(rem, int64(len(magic))))
	b, err := w.at(off, k)
	if err != nil {
		return false, err
	}
	if !bytes.Equal(b, magic[:k]) {
		return false, nil
	}
	if rem < headerSize {
		return true, nil
	}
	b, err = w.at(off, headerSize)
	if err != nil {
		return false, err
	}
	n := binary.LittleEndian.Uint32(b[4:8])
	return n <= maxPayload && int64(n) > rem-headerSize, nil
}

// damage is a byte range of a segment that holds no intact record.
type damage struct {
	off, n int64
	tail   bool // runs to the end of the file
	torn   bool // tail that looks like one record cut short
}

// entry locates one record: its ID as an offset from the segment's base ID, and its
// byte offset in the file. Eight bytes a record keep the index of a few hundred MB of
// spool within a few MB of memory.
type entry struct {
	d   uint32
	off uint32
}

type scanResult struct {
	base    uint64
	entries []entry
	last    uint64 // ID of the last kept record (the after argument when none)
	end     int64  // where the intact part of the file ends
	damaged []damage
}

// scan reads a segment and indexes every intact record whose ID is above after and
// rising. Bytes that are not such a record form damaged ranges; recovery resumes at
// the next marker that starts a record with a valid checksum.
func scan(r io.ReaderAt, size int64, after uint64) (scanResult, error) {
	w := &window{r: r, size: size}
	res := scanResult{last: after}
	var off int64
	bad := int64(-1)
	for off < size {
		h, ok, err := w.record(off)
		if err != nil {
			return res, err
		}
		if ok {
			keep := h.id > res.last && h.id < maxID && off <= math.MaxUint32 &&
				(len(res.entries) == 0 || h.id-res.base <= math.MaxUint32)
			if keep {
				if bad >= 0 {
					res.damaged = append(res.damaged, damage{off: bad, n: off - bad})
					bad = -1
				}
				if len(res.entries) == 0 {
					res.base = h.id
				}
				res.entries = append(res.entries, entry{d: uint32(h.id - res.base), off: uint32(off)})
				res.last = h.id
				off += int64(headerSize + h.n)
				continue
			}
			// Intact but out of order (a stray copy of an older record): skip it whole.
			if bad < 0 {
				bad = off
			}
			off += int64(headerSize + h.n)
			continue
		}
		if bad < 0 {
			bad = off
		}
		next, err := w.nextMagic(off + 1)
		if err != nil {
			return res, err
		}
		if next < 0 {
			break
		}
		off = next
	}
	res.end = size
	if bad >= 0 {
		torn, err := w.looksTorn(bad)
		if err != nil {
			return res, err
		}
		res.damaged = append(res.damaged, damage{off: bad, n: size - bad, tail: true, torn: torn})
		res.end = bad
	}
	return res, nil
}
