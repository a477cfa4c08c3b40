package dpi_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgedrun/edged/dpi"
)

// mbap prepends an MBAP header (transaction id 0x0102, protocol 0, unit 1) whose length
// field agrees with the PDU.
func mbap(pdu ...byte) []byte {
	return mbapTx(0x0102, pdu...)
}

func mbapTx(tx uint16, pdu ...byte) []byte {
	l := 1 + len(pdu)
	return append([]byte{byte(tx >> 8), byte(tx), 0, 0, byte(l >> 8), byte(l), 1}, pdu...)
}

// cat joins PDU pieces: bytes, 16-bit big-endian words (u16) and filler (fill).
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
func b(v ...byte) []byte         { return v }
func u16(v int) []byte           { return []byte{byte(v >> 8), byte(v)} }
func fill(n int) []byte          { return bytes.Repeat([]byte{0xA5}, n) }

// fields is what a clean frame must hold, beyond the header; nil skips the check.
type fields struct {
	table       dpi.Table
	addr, qty   uint16
	waddr, wqty uint16
	write, exc  bool
	excCode     uint8
}

type parseCase struct {
	name string
	dir  dpi.Direction
	adu  []byte
	want dpi.Class
	f    *fields
}

func req(name string, want dpi.Class, pdu []byte, f ...fields) parseCase {
	return mk(name, dpi.Request, want, pdu, f)
}

func resp(name string, want dpi.Class, pdu []byte, f ...fields) parseCase {
	return mk(name, dpi.Response, want, pdu, f)
}

func mk(name string, dir dpi.Direction, want dpi.Class, pdu []byte, f []fields) parseCase {
	c := parseCase{name: name, dir: dir, adu: mbap(pdu...), want: want}
	if len(f) > 0 {
		c.f = &f[0]
	}
	return c
}

const (
	clean   = dpi.Class("")
	bad     = dpi.MalformedPDU
	badLen  = dpi.InvalidLength
	badQty  = dpi.QuantityOutOfRange
	unknown = dpi.UnknownFunctionCode
)

// parseCases covers every public function code in both directions, clean and broken.
func parseCases() []parseCase {
	cs := []parseCase{
		// Reads, FC 1-4: fixed 5-byte requests, byte-counted responses.
		req("fc1 clean", clean, cat(b(1), u16(0), u16(10)), fields{table: dpi.Coils, qty: 10}),
		req("fc1 max 2000", clean, cat(b(1), u16(100), u16(2000)), fields{table: dpi.Coils, addr: 100, qty: 2000}),
		req("fc1 2001", badQty, cat(b(1), u16(0), u16(2001))),
		req("fc1 quantity 0", badQty, cat(b(1), u16(0), u16(0))),
		req("fc1 last address", clean, cat(b(1), u16(65535), u16(1)), fields{table: dpi.Coils, addr: 65535, qty: 1}),
		req("fc1 past 65535", badQty, cat(b(1), u16(65535), u16(2))),
		req("fc1 truncated", bad, cat(b(1), u16(0), b(0))),
		req("fc1 over-long", bad, cat(b(1), u16(0), u16(1), b(0))),
		req("fc1 function only", bad, b(1)),
		req("fc2 clean", clean, cat(b(2), u16(7), u16(2000)), fields{table: dpi.DiscreteInputs, addr: 7, qty: 2000}),
		req("fc2 2001", badQty, cat(b(2), u16(0), u16(2001))),
		req("fc2 truncated", bad, cat(b(2), u16(0))),
		req("fc3 clean", clean, cat(b(3), u16(1), u16(125)), fields{table: dpi.HoldingRegisters, addr: 1, qty: 125}),
		req("fc3 126", badQty, cat(b(3), u16(1), u16(126))),
		req("fc3 quantity 0", badQty, cat(b(3), u16(1), u16(0))),
		req("fc3 past 65535", badQty, cat(b(3), u16(65500), u16(100))),
		req("fc3 over-long", bad, cat(b(3), u16(1), u16(1), u16(0))),
		req("fc4 clean", clean, cat(b(4), u16(0), u16(1)), fields{table: dpi.InputRegisters, qty: 1}),
		req("fc4 126", badQty, cat(b(4), u16(0), u16(126))),
		req("fc4 truncated", bad, cat(b(4), u16(0), b(1))),

		resp("fc1 resp clean", clean, b(1, 2, 0xFF, 0x03), fields{table: dpi.Coils, qty: 16}),
		resp("fc1 resp 250 bytes", clean, cat(b(1, 250), fill(250)), fields{table: dpi.Coils, qty: 2000}),
		resp("fc1 resp 251 bytes", badQty, cat(b(1, 251), fill(251))),
		resp("fc1 resp 0 bytes", badQty, b(1, 0)),
		resp("fc1 resp count above length", badLen, b(1, 3, 0xFF, 0x03)),
		resp("fc1 resp count below length", badLen, b(1, 1, 0xFF, 0x03)),
		resp("fc1 resp truncated", bad, b(1)),
		resp("fc2 resp clean", clean, b(2, 1, 0x55), fields{table: dpi.DiscreteInputs, qty: 8}),
		resp("fc2 resp count mismatch", badLen, b(2, 2, 0x55)),
		resp("fc3 resp clean", clean, cat(b(3, 4), u16(1), u16(2)), fields{table: dpi.HoldingRegisters, qty: 2}),
		resp("fc3 resp 125 registers", clean, cat(b(3, 250), fill(250)), fields{table: dpi.HoldingRegisters, qty: 125}),
		resp("fc3 resp odd count", bad, cat(b(3, 3), u16(1), b(2))),
		resp("fc3 resp 0 bytes", badQty, b(3, 0)),
		resp("fc3 resp count mismatch", badLen, cat(b(3, 2), u16(1), u16(2))),
		resp("fc3 resp truncated", bad, b(3)),
		resp("fc4 resp clean", clean, cat(b(4, 2), u16(42)), fields{table: dpi.InputRegisters, qty: 1}),
		resp("fc4 resp count mismatch", badLen, cat(b(4, 4), u16(42))),

		// Single writes, FC 5 and 6: fixed 5 bytes both ways, the response echoes.
		req("fc5 on", clean, cat(b(5), u16(5), u16(0xFF00)), fields{table: dpi.Coils, addr: 5, qty: 1, write: true}),
		req("fc5 off", clean, cat(b(5), u16(5), u16(0)), fields{table: dpi.Coils, addr: 5, qty: 1, write: true}),
		req("fc5 bad value", bad, cat(b(5), u16(5), u16(0x1234))),
		req("fc5 truncated", bad, cat(b(5), u16(5), b(0xFF))),
		req("fc5 over-long", bad, cat(b(5), u16(5), u16(0xFF00), b(0))),
		resp("fc5 resp clean", clean, cat(b(5), u16(5), u16(0xFF00)), fields{table: dpi.Coils, addr: 5, qty: 1, write: true}),
		resp("fc5 resp bad value", bad, cat(b(5), u16(5), u16(0x0001))),
		resp("fc5 resp truncated", bad, cat(b(5), u16(5))),
		req("fc6 clean", clean, cat(b(6), u16(9), u16(0xBEEF)), fields{table: dpi.HoldingRegisters, addr: 9, qty: 1, write: true}),
		req("fc6 truncated", bad, cat(b(6), u16(9))),
		req("fc6 over-long", bad, cat(b(6), u16(9), u16(1), u16(1))),
		resp("fc6 resp clean", clean, cat(b(6), u16(9), u16(0xBEEF)), fields{table: dpi.HoldingRegisters, addr: 9, qty: 1, write: true}),
		resp("fc6 resp over-long", bad, cat(b(6), u16(9), u16(1), b(0))),

		// Serial-line functions with fixed layouts: 7, 11, 12, 17.
		req("fc7 clean", clean, b(7)),
		req("fc7 over-long", bad, b(7, 0)),
		resp("fc7 resp clean", clean, b(7, 0x6D)),
		resp("fc7 resp truncated", bad, b(7)),
		resp("fc7 resp over-long", bad, b(7, 1, 2)),
		req("fc11 clean", clean, b(11)),
		req("fc11 over-long", bad, b(11, 0, 0)),
		resp("fc11 resp clean", clean, cat(b(11), u16(0xFFFF), u16(0x0108))),
		resp("fc11 resp truncated", bad, cat(b(11), u16(0xFFFF), b(1))),
		resp("fc11 resp over-long", bad, cat(b(11), u16(0), u16(1), b(0))),
		req("fc12 clean", clean, b(12)),
		req("fc12 over-long", bad, b(12, 1)),
		resp("fc12 resp clean", clean, cat(b(12, 8), u16(0), u16(0x0108), u16(0x0121), b(0x20, 0x00))),
		resp("fc12 resp no events", clean, cat(b(12, 6), u16(0), u16(1), u16(2))),
		resp("fc12 resp 64 events", clean, cat(b(12, 70), u16(0), u16(1), u16(2), fill(64))),
		resp("fc12 resp 65 events", bad, cat(b(12, 71), u16(0), u16(1), u16(2), fill(65))),
		resp("fc12 resp short header", bad, cat(b(12, 4), u16(0), u16(1))),
		resp("fc12 resp count mismatch", badLen, cat(b(12, 9), u16(0), u16(1), u16(2), b(0))),
		resp("fc12 resp truncated", bad, b(12)),
		req("fc17 clean", clean, b(17)),
		req("fc17 over-long", bad, b(17, 0)),
		resp("fc17 resp clean", clean, b(17, 5, 0xB4, 0xFF, 'L', 'M', 'B')),
		resp("fc17 resp no data", bad, b(17, 0)),
		resp("fc17 resp count mismatch", badLen, b(17, 5, 0xB4, 0xFF)),
		resp("fc17 resp truncated", bad, b(17)),

		// Diagnostics, FC 8: sub-function then data; the response echoes.
		req("fc8 return query data", clean, cat(b(8), u16(0), u16(0xA537))),
		req("fc8 return query data empty", clean, cat(b(8), u16(0))),
		req("fc8 return query data odd", bad, cat(b(8), u16(0), b(1))),
		req("fc8 restart", clean, cat(b(8), u16(1), u16(0xFF00))),
		req("fc8 force listen only", clean, cat(b(8), u16(4), u16(0))),
		req("fc8 bus message count", clean, cat(b(8), u16(11), u16(0))),
		req("fc8 clear overrun", clean, cat(b(8), u16(20), u16(0))),
		req("fc8 counter truncated", bad, cat(b(8), u16(10))),
		req("fc8 counter over-long", bad, cat(b(8), u16(10), u16(0), u16(0))),
		req("fc8 reserved 5", unknown, cat(b(8), u16(5), u16(0))),
		req("fc8 reserved 19", unknown, cat(b(8), u16(19), u16(0))),
		req("fc8 reserved 21", unknown, cat(b(8), u16(21), u16(0))),
		req("fc8 truncated", bad, b(8, 0)),
		resp("fc8 resp echo", clean, cat(b(8), u16(0), u16(0xA537))),
		resp("fc8 resp counter", clean, cat(b(8), u16(12), u16(3))),
		resp("fc8 resp reserved", unknown, cat(b(8), u16(9), u16(0))),
		resp("fc8 resp truncated", bad, b(8)),

		// Multiple writes, FC 15 and 16: byte count = quantity's bytes.
		req("fc15 clean", clean, cat(b(15), u16(20), u16(10), b(2, 0xCD, 0x01)), fields{table: dpi.Coils, addr: 20, qty: 10, write: true}),
		req("fc15 max 1968", clean, cat(b(15), u16(0), u16(1968), b(246), fill(246)), fields{table: dpi.Coils, qty: 1968, write: true}),
		req("fc15 1969", badQty, cat(b(15), u16(0), u16(1969), b(247), fill(247))),
		req("fc15 quantity 0", badQty, cat(b(15), u16(0), u16(0), b(0))),
		req("fc15 past 65535", badQty, cat(b(15), u16(65530), u16(10), b(2, 0, 0))),
		req("fc15 count disagrees with quantity", bad, cat(b(15), u16(20), u16(10), b(3, 0, 0, 0))),
		req("fc15 count above length", badLen, cat(b(15), u16(20), u16(10), b(2, 0xCD))),
		req("fc15 count below length", badLen, cat(b(15), u16(20), u16(10), b(2, 0xCD, 0x01, 0))),
		req("fc15 truncated", bad, cat(b(15), u16(20), u16(10))),
		resp("fc15 resp clean", clean, cat(b(15), u16(20), u16(10)), fields{table: dpi.Coils, addr: 20, qty: 10, write: true}),
		resp("fc15 resp 1969", badQty, cat(b(15), u16(0), u16(1969))),
		resp("fc15 resp quantity 0", badQty, cat(b(15), u16(0), u16(0))),
		resp("fc15 resp truncated", bad, cat(b(15), u16(20))),
		resp("fc15 resp over-long", bad, cat(b(15), u16(20), u16(10), b(0))),
		req("fc16 clean", clean, cat(b(16), u16(1), u16(2), b(4), u16(10), u16(20)), fields{table: dpi.HoldingRegisters, addr: 1, qty: 2, write: true}),
		req("fc16 max 123", clean, cat(b(16), u16(0), u16(123), b(246), fill(246)), fields{table: dpi.HoldingRegisters, qty: 123, write: true}),
		req("fc16 124", badQty, cat(b(16), u16(0), u16(124), b(246), fill(246))),
		req("fc16 quantity 0", badQty, cat(b(16), u16(0), u16(0), b(0))),
		req("fc16 count disagrees with quantity", bad, cat(b(16), u16(1), u16(2), b(2), u16(10))),
		req("fc16 odd count", bad, cat(b(16), u16(1), u16(2), b(3), u16(10), b(0))),
		req("fc16 count above length", badLen, cat(b(16), u16(1), u16(2), b(4), u16(10))),
		req("fc16 count below length", badLen, cat(b(16), u16(1), u16(2), b(4), u16(10), u16(20), b(0))),
		req("fc16 truncated", bad, cat(b(16), u16(1), u16(2))),
		resp("fc16 resp clean", clean, cat(b(16), u16(1), u16(2)), fields{table: dpi.HoldingRegisters, addr: 1, qty: 2, write: true}),
		resp("fc16 resp max 123", clean, cat(b(16), u16(1), u16(123)), fields{table: dpi.HoldingRegisters, addr: 1, qty: 123, write: true}),
		resp("fc16 resp 124", badQty, cat(b(16), u16(1), u16(124))),
		resp("fc16 resp truncated", bad, cat(b(16), u16(1), b(0))),

		// File records, FC 20 and 21.
		req("fc20 clean", clean, cat(b(20, 14), b(6), u16(4), u16(1), u16(2), b(6), u16(3), u16(9), u16(2))),
		req("fc20 count mismatch", badLen, cat(b(20, 8), b(6), u16(4), u16(1), u16(2))),
		req("fc20 not whole sub-requests", bad, cat(b(20, 8), b(6), u16(4), u16(1), u16(2), b(0))),
		req("fc20 empty", bad, b(20, 0)),
		req("fc20 reference type 5", bad, cat(b(20, 7), b(5), u16(4), u16(1), u16(2))),
		req("fc20 truncated", bad, b(20)),
		resp("fc20 resp clean", clean, cat(b(20, 12), b(5, 6), u16(0x0DFE), u16(0x0020), b(5, 6), u16(0x33CD), u16(0x0040))),
		resp("fc20 resp even sub-length", bad, cat(b(20, 5), b(4, 6), u16(1), b(0))),
		resp("fc20 resp reference type 7", bad, cat(b(20, 4), b(3, 7), u16(1))),
		resp("fc20 resp sub-response past count", bad, cat(b(20, 4), b(5, 6), u16(1))),
		resp("fc20 resp count mismatch", badLen, cat(b(20, 5), b(3, 6), u16(1))),
		resp("fc20 resp empty", bad, b(20, 0)),
		resp("fc20 resp truncated", bad, b(20)),
		req("fc21 clean", clean, cat(b(21, 13), b(6), u16(4), u16(7), u16(3), u16(0x06AF), u16(0x04BE), u16(0x100D)), fields{write: true}),
		req("fc21 count mismatch", badLen, cat(b(21, 13), b(6), u16(4), u16(7), u16(3), u16(0x06AF), u16(0x04BE))),
		req("fc21 records past count", bad, cat(b(21, 11), b(6), u16(4), u16(7), u16(3), u16(0x06AF), u16(0x04BE))),
		req("fc21 records short of count", bad, cat(b(21, 12), b(6), u16(4), u16(7), u16(2), u16(0x06AF), u16(0x04BE), b(0))),
		req("fc21 reference type 0", bad, cat(b(21, 9), b(0), u16(4), u16(7), u16(1), u16(1))),
		req("fc21 record length 0", bad, cat(b(21, 9), b(6), u16(4), u16(7), u16(0), u16(1))),
		req("fc21 count below 9", bad, cat(b(21, 7), b(6), u16(4), u16(7), u16(0))),
		req("fc21 truncated", bad, b(21)),
		resp("fc21 resp echo", clean, cat(b(21, 9), b(6), u16(4), u16(7), u16(1), u16(0x06AF)), fields{write: true}),
		resp("fc21 resp count mismatch", badLen, cat(b(21, 10), b(6), u16(4), u16(7), u16(1), u16(0x06AF))),

		// Mask write, FC 22: fixed 7 bytes both ways.
		req("fc22 clean", clean, cat(b(22), u16(4), u16(0x00F2), u16(0x0025)), fields{table: dpi.HoldingRegisters, addr: 4, qty: 1, write: true}),
		req("fc22 truncated", bad, cat(b(22), u16(4), u16(0x00F2))),
		req("fc22 over-long", bad, cat(b(22), u16(4), u16(0x00F2), u16(0x0025), b(0))),
		resp("fc22 resp clean", clean, cat(b(22), u16(4), u16(0x00F2), u16(0x0025)), fields{table: dpi.HoldingRegisters, addr: 4, qty: 1, write: true}),
		resp("fc22 resp truncated", bad, cat(b(22), u16(4), u16(0x00F2), b(0))),

		// Read/write multiple, FC 23.
		req("fc23 clean", clean, cat(b(23), u16(3), u16(6), u16(14), u16(3), b(6), u16(0xFF), u16(0xFF), u16(0xFF)),
			fields{table: dpi.HoldingRegisters, addr: 3, qty: 6, waddr: 14, wqty: 3, write: true}),
		req("fc23 read 125 write 121", clean, cat(b(23), u16(0), u16(125), u16(200), u16(121), b(242), fill(242)),
			fields{table: dpi.HoldingRegisters, qty: 125, waddr: 200, wqty: 121, write: true}),
		req("fc23 read 126", badQty, cat(b(23), u16(0), u16(126), u16(0), u16(1), b(2), u16(0))),
		req("fc23 read 0", badQty, cat(b(23), u16(0), u16(0), u16(0), u16(1), b(2), u16(0))),
		req("fc23 write 122", badQty, cat(b(23), u16(0), u16(1), u16(0), u16(122), b(242), fill(242))),
		req("fc23 write 0", badQty, cat(b(23), u16(0), u16(1), u16(0), u16(0), b(0))),
		req("fc23 write past 65535", badQty, cat(b(23), u16(0), u16(1), u16(65535), u16(2), b(4), u16(0), u16(0))),
		req("fc23 count disagrees with quantity", bad, cat(b(23), u16(0), u16(1), u16(0), u16(2), b(2), u16(0))),
		req("fc23 count above length", badLen, cat(b(23), u16(0), u16(1), u16(0), u16(2), b(4), u16(0))),
		req("fc23 truncated", bad, cat(b(23), u16(0), u16(1), u16(0), u16(2))),
		resp("fc23 resp clean", clean, cat(b(23, 4), u16(1), u16(2)), fields{table: dpi.HoldingRegisters, qty: 2, write: true}),
		resp("fc23 resp odd", bad, cat(b(23, 3), u16(1), b(2))),
		resp("fc23 resp 1 byte", badQty, cat(b(23, 1), b(1))),
		resp("fc3 resp 251 bytes", badQty, cat(b(3, 251), fill(251))),
		resp("fc23 resp count mismatch", badLen, cat(b(23, 6), u16(1), u16(2))),

		// FIFO queue, FC 24.
		req("fc24 clean", clean, cat(b(24), u16(0x04DE)), fields{table: dpi.HoldingRegisters, addr: 0x04DE, qty: 1}),
		req("fc24 truncated", bad, b(24, 4)),
		req("fc24 over-long", bad, cat(b(24), u16(0x04DE), b(0))),
		resp("fc24 resp clean", clean, cat(b(24), u16(6), u16(2), u16(0x01B8), u16(0x1284)), fields{table: dpi.HoldingRegisters, qty: 2}),
		resp("fc24 resp empty queue", clean, cat(b(24), u16(2), u16(0)), fields{table: dpi.HoldingRegisters}),
		resp("fc24 resp 31", clean, cat(b(24), u16(64), u16(31), fill(62)), fields{table: dpi.HoldingRegisters, qty: 31}),
		resp("fc24 resp 32", badQty, cat(b(24), u16(66), u16(32), fill(64))),
		resp("fc24 resp count disagrees with fifo count", bad, cat(b(24), u16(4), u16(2), u16(1))),
		resp("fc24 resp count mismatch", badLen, cat(b(24), u16(8), u16(2), u16(1), u16(2))),
		resp("fc24 resp truncated", bad, cat(b(24), u16(2))),

		// Encapsulated interface, FC 43: 14 read device identification, 13 CANopen.
		req("fc43/14 basic", clean, b(43, 14, 1, 0)),
		req("fc43/14 individual", clean, b(43, 14, 4, 0x80)),
		req("fc43/14 code 0", bad, b(43, 14, 0, 0)),
		req("fc43/14 code 5", bad, b(43, 14, 5, 0)),
		req("fc43/14 truncated", bad, b(43, 14, 1)),
		req("fc43/14 over-long", bad, b(43, 14, 1, 0, 0)),
		req("fc43/13 canopen", clean, b(43, 13, 0, 1, 2, 3)),
		req("fc43 mei 15", unknown, b(43, 15, 1, 0)),
		req("fc43 mei 0", unknown, b(43, 0)),
		req("fc43 truncated", bad, b(43)),
		resp("fc43/14 resp clean", clean, cat(b(43, 14, 1, 0x01, 0x00, 0x00, 3), b(0, 3), []byte("ACM"), b(1, 2), []byte("P1"), b(2, 0))),
		resp("fc43/14 resp more follows", clean, cat(b(43, 14, 2, 0x82, 0xFF, 0x05, 1), b(3, 2), []byte("ok"))),
		resp("fc43/14 resp no objects", clean, b(43, 14, 1, 0x81, 0x00, 0x00, 0)),
		resp("fc43/14 resp object past length", badLen, cat(b(43, 14, 1, 0x01, 0x00, 0x00, 1), b(0, 4), []byte("ACM"))),
		resp("fc43/14 resp object header past length", badLen, cat(b(43, 14, 1, 0x01, 0x00, 0x00, 2), b(0, 3), []byte("ACM"), b(1))),
		resp("fc43/14 resp bytes after objects", badLen, cat(b(43, 14, 1, 0x01, 0x00, 0x00, 1), b(0, 3), []byte("ACMx"))),
		resp("fc43/14 resp conformity 4", bad, b(43, 14, 1, 0x04, 0x00, 0x00, 0)),
		resp("fc43/14 resp more follows 1", bad, b(43, 14, 1, 0x01, 0x01, 0x00, 0)),
		resp("fc43/14 resp code 9", bad, b(43, 14, 9, 0x01, 0x00, 0x00, 0)),
		resp("fc43/14 resp individual two objects", bad, cat(b(43, 14, 4, 0x01, 0x00, 0x00, 2), b(0, 1, 'A', 1, 1, 'B'))),
		resp("fc43/14 resp truncated", bad, b(43, 14, 1, 0x01, 0x00, 0x00)),
		resp("fc43/13 resp canopen", clean, b(43, 13, 9)),
		resp("fc43 resp mei 12", unknown, b(43, 12, 1)),

		// Exception responses: function|0x80 and one defined code.
		resp("exception fc3", clean, b(0x83, 2), fields{table: dpi.HoldingRegisters, exc: true, excCode: 2}),
		resp("exception fc16", clean, b(0x90, 4), fields{table: dpi.HoldingRegisters, write: true, exc: true, excCode: 4}),
		resp("exception fc43", clean, b(0xAB, 1), fields{exc: true, excCode: 1}),
		resp("exception nak", clean, b(0x81, 7), fields{table: dpi.Coils, exc: true, excCode: 7}),
		resp("exception gateway", clean, b(0x84, 11), fields{table: dpi.InputRegisters, exc: true, excCode: 11}),
		resp("exception truncated", bad, b(0x83)),
		resp("exception over-long", bad, b(0x83, 2, 0)),
		resp("exception code 0", bad, b(0x83, 0)),
		resp("exception code 9", bad, b(0x83, 9)),
		resp("exception code 12", bad, b(0x83, 12)),
		resp("exception unknown function", unknown, b(0x89, 1)),
		resp("exception function 0", unknown, b(0x80, 1)),
		req("request with exception bit", unknown, b(0x83, 2)),
	}
	// Every code that is not public is unknown, in both directions, whatever follows it.
	for _, fc := range []byte{0, 9, 10, 13, 14, 18, 19, 25, 26, 40, 41, 42, 44, 64, 65, 66, 70, 72, 90, 100, 105, 110, 127} {
		cs = append(cs,
			req(fmt.Sprintf("fc%d unknown", fc), unknown, cat(b(fc), u16(0), u16(1))),
			resp(fmt.Sprintf("fc%d resp unknown", fc), unknown, cat(b(fc), u16(0), u16(1))),
			resp(fmt.Sprintf("fc%d exception unknown", fc), unknown, b(fc|0x80, 1)),
		)
	}
	for _, fc := range []byte{0x80, 0x81, 0x90, 0xAB, 0xFF} {
		cs = append(cs, req(fmt.Sprintf("request fc 0x%02x", fc), unknown, b(fc, 1)))
	}
	// MBAP header anomalies.
	protocol1 := mbap(3, 0, 0, 0, 1)
	protocol1[3] = 1
	length1 := []byte{0, 1, 0, 0, 0, 1, 1}
	length255 := append([]byte{0, 1, 0, 0, 0, 255, 1, 3}, fill(253)...)
	longerThanLength := append(mbap(3, 0, 0, 0, 1), 0)
	shorterThanLength := mbap(3, 0, 0, 0, 1)
	shorterThanLength = shorterThanLength[:len(shorterThanLength)-1]
	cs = append(cs,
		parseCase{name: "protocol id 1", dir: dpi.Request, adu: protocol1, want: dpi.InvalidProtocolID},
		parseCase{name: "protocol id 1 response", dir: dpi.Response, adu: protocol1, want: dpi.InvalidProtocolID},
		parseCase{name: "length field 1", dir: dpi.Request, adu: length1, want: badLen},
		parseCase{name: "length field 0", dir: dpi.Request, adu: []byte{0, 1, 0, 0, 0, 0, 1}, want: badLen},
		parseCase{name: "length field 255", dir: dpi.Request, adu: length255, want: badLen},
		parseCase{name: "adu longer than length", dir: dpi.Request, adu: longerThanLength, want: badLen},
		parseCase{name: "adu shorter than length", dir: dpi.Response, adu: shorterThanLength, want: badLen},
		parseCase{name: "header only", dir: dpi.Request, adu: []byte{0, 1, 0, 0, 0, 2, 1}, want: badLen},
		parseCase{name: "six bytes", dir: dpi.Request, adu: []byte{0, 1, 0, 0, 0, 2}, want: badLen},
		parseCase{name: "empty", dir: dpi.Request, adu: nil, want: badLen},
	)
	return cs
}

func TestParse(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range parseCases() {
		if seen[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			f, got, reason := dpi.ParseReason(c.adu, c.dir)
			if got != c.want {
				t.Fatalf("Parse(% x, %v) = %q (%s), want %q", c.adu, c.dir, got, reason, c.want)
			}
			if (got == "") != (reason == "") {
				t.Fatalf("class %q with reason %q", got, reason)
			}
			if g, _ := dpi.Parse(c.adu, c.dir); !sameFrame(g, f) {
				t.Fatalf("Parse and ParseReason disagree: %+v vs %+v", g, f)
			}
			if f.Dir != c.dir || !bytes.Equal(f.ADU, c.adu) {
				t.Fatalf("frame does not carry its direction and bytes: %+v", f)
			}
			if len(c.adu) > 0 && &f.ADU[0] != &c.adu[0] {
				t.Fatal("ADU does not alias the input")
			}
			if len(c.adu) >= dpi.MBAPLen {
				if f.TxID != uint16(c.adu[0])<<8|uint16(c.adu[1]) || f.Unit != c.adu[6] || f.Length != uint16(c.adu[4])<<8|uint16(c.adu[5]) {
					t.Fatalf("header fields wrong: %+v", f)
				}
			}
			if got == "" && c.f != nil {
				w := c.f
				if f.Table != w.table || f.Address != w.addr || f.Quantity != w.qty || f.WriteAddress != w.waddr ||
					f.WriteQuantity != w.wqty || f.Write != w.write || f.Exception != w.exc || f.ExceptionCode != w.excCode {
					t.Fatalf("fields: got table %v addr %d qty %d waddr %d wqty %d write %v exc %v/%d, want %+v",
						f.Table, f.Address, f.Quantity, f.WriteAddress, f.WriteQuantity, f.Write, f.Exception, f.ExceptionCode, *w)
				}
			}
		})
	}
}

func sameFrame(a, b dpi.Frame) bool {
	return reflect.DeepEqual(a, b)
}

// TestParseCoversPublicFunctions proves the table has a clean request and a clean
// response for every public function code, and a clean exception response for each.
func TestParseCoversPublicFunctions(t *testing.T) {
	type key struct {
		fc  byte
		dir dpi.Direction
	}
	have := map[key]bool{}
	for _, c := range parseCases() {
		if c.want == "" {
			have[key{c.adu[7], c.dir}] = true
		}
	}
	for _, fc := range []byte{1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43} {
		if !have[key{fc, dpi.Request}] || !have[key{fc, dpi.Response}] {
			t.Errorf("fc %d lacks a clean request or response case", fc)
		}
		if _, c := dpi.Parse(mbap(fc|0x80, 1), dpi.Response); c != "" {
			t.Errorf("exception response for fc %d: %q", fc, c)
		}
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	cases := parseCases()
	allocs := testing.AllocsPerRun(20, func() {
		for _, c := range cases {
			dpi.Parse(c.adu, c.dir)
			dpi.ParseReason(c.adu, c.dir)
		}
	})
	if allocs != 0 {
		t.Fatalf("Parse allocates %.1f times per run of %d frames", allocs, len(cases))
	}
}

func TestADULen(t *testing.T) {
	frame := mbap(3, 0, 0, 0, 10) // length field 6, ADU 12 bytes
	for i := 0; i < dpi.MBAPLen; i++ {
		n, err := dpi.ADULen(frame[:i])
		if n != 0 || err != nil {
			t.Fatalf("ADULen of a %d-byte header = %d, %v; want 0, nil (read more)", i, n, err)
		}
	}
	for i := dpi.MBAPLen; i <= len(frame); i++ {
		n, err := dpi.ADULen(frame[:i])
		if n != 12 || err != nil {
			t.Fatalf("ADULen of %d bytes = %d, %v; want 12, nil", i, n, err)
		}
	}
	for _, c := range []struct {
		length int
		want   int
	}{{2, 8}, {3, 9}, {254, dpi.MaxADU}, {0, -1}, {1, -1}, {255, -1}, {256, -1}, {0xFFFF, -1}} {
		h := []byte{0, 1, 0, 0, byte(c.length >> 8), byte(c.length), 1}
		n, err := dpi.ADULen(h)
		if c.want > 0 {
			if n != c.want || err != nil {
				t.Errorf("length field %d: ADULen = %d, %v; want %d", c.length, n, err, c.want)
			}
			continue
		}
		var fe *dpi.FrameError
		if !errors.As(err, &fe) || fe.Class != dpi.InvalidLength || n != 0 {
			t.Errorf("length field %d: ADULen = %d, %v; want a FrameError of class invalid_length", c.length, n, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "invalid_length: ") {
			t.Errorf("error text %q does not start with the class", err)
		}
	}
	// A wrong protocol id still frames: Parse reports it, the stream goes on.
	p := mbap(3, 0, 0, 0, 1)
	p[2] = 0xFF
	if n, err := dpi.ADULen(p); n != len(p) || err != nil {
		t.Fatalf("ADULen with protocol id 0xff00 = %d, %v", n, err)
	}
}

func TestClassesAndSeverities(t *testing.T) {
	want := []string{"invalid_protocol_id", "invalid_length", "malformed_pdu", "unknown_function_code",
		"function_not_allowed", "function_code_conflict", "address_out_of_range", "quantity_out_of_range",
		"unit_id_not_allowed", "unsolicited_response", "transaction_id_reuse", "flood"}
	if len(dpi.Classes) != len(want) {
		t.Fatalf("%d classes, want %d", len(dpi.Classes), len(want))
	}
	for i, c := range dpi.Classes {
		if string(c) != want[i] {
			t.Errorf("class %d is %q, want %q (names are stable)", i, c, want[i])
		}
		switch c.Severity() {
		case dpi.SeverityLow, dpi.SeverityMedium, dpi.SeverityHigh, dpi.SeverityCritical:
		default:
			t.Errorf("class %q has severity %q", c, c.Severity())
		}
	}
	if s := dpi.Class("nope").Severity(); s != "" {
		t.Errorf("unknown class has severity %q", s)
	}
	if dpi.FunctionNotAllowed.Severity() != dpi.SeverityCritical || dpi.TransactionIDReuse.Severity() != dpi.SeverityLow {
		t.Error("severity ranking changed")
	}
	for tb, s := range map[dpi.Table]string{dpi.TableNone: "none", dpi.Coils: "coil", dpi.DiscreteInputs: "discrete",
		dpi.HoldingRegisters: "holding", dpi.InputRegisters: "input", 9: "table(9)"} {
		if tb.String() != s {
			t.Errorf("Table(%d).String() = %q, want %q", tb, tb.String(), s)
		}
	}
	if dpi.Request.String() != "request" || dpi.Response.String() != "response" {
		t.Error("direction names changed")
	}
	if (&dpi.FrameError{Class: dpi.MalformedPDU, Reason: "x"}).Error() != "malformed_pdu: x" {
		t.Error("FrameError text changed")
	}
}

// streamFrames is a conversation of requests and responses of several sizes, the
// largest ADU included, as one byte stream.
func streamFrames() [][]byte {
	return [][]byte{
		mbapTx(1, cat(b(3), u16(0), u16(10))...),
		mbapTx(2, b(17)...),
		mbapTx(3, cat(b(16), u16(0), u16(123), b(246), fill(246))...), // MaxADU bytes
		mbapTx(4, cat(b(5), u16(5), u16(0xFF00))...),
		mbapTx(5, b(0x83, 2)...),
		mbapTx(6, cat(b(1, 1), b(0x55))...),
		mbapTx(7, cat(b(43, 14, 1, 0x01, 0x00, 0x00, 1), b(0, 3), []byte("ACM"))...),
	}
}

var streamDirs = []dpi.Direction{dpi.Request, dpi.Request, dpi.Request, dpi.Response, dpi.Response, dpi.Response, dpi.Response}

// reassemble frames a stream delivered in the given chunks with ADULen alone, the
// way any reader can without a Splitter.
func reassemble(t *testing.T, chunks [][]byte) [][]byte {
	t.Helper()
	var out [][]byte
	var pending []byte
	for _, c := range chunks {
		pending = append(pending, c...)
		for {
			n, err := dpi.ADULen(pending)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 || n > len(pending) {
				break
			}
			out = append(out, append([]byte(nil), pending[:n]...))
			pending = pending[n:]
		}
	}
	if len(pending) != 0 {
		t.Fatalf("%d bytes left over", len(pending))
	}
	return out
}

// split cuts stream at the given ascending offsets.
func split(stream []byte, cuts ...int) [][]byte {
	var chunks [][]byte
	prev := 0
	for _, c := range cuts {
		chunks = append(chunks, stream[prev:c])
		prev = c
	}
	return append(chunks, stream[prev:])
}

func TestStreamReassembly(t *testing.T) {
	frames := streamFrames()
	stream := bytes.Join(frames, nil)
	check := func(got [][]byte, how string) {
		t.Helper()
		if len(got) != len(frames) {
			t.Fatalf("%s: %d frames, want %d", how, len(got), len(frames))
		}
		for i := range frames {
			if !bytes.Equal(got[i], frames[i]) {
				t.Fatalf("%s: frame %d = % x, want % x", how, i, got[i], frames[i])
			}
			if _, c := dpi.Parse(got[i], streamDirs[i]); c != "" {
				t.Fatalf("%s: frame %d: %q", how, i, c)
			}
		}
	}
	// Every single cut and every pair of cuts: a frame split in two or three reads,
	// several frames in one read, a header split anywhere.
	for i := 0; i <= len(stream); i++ {
		check(reassemble(t, split(stream, i)), fmt.Sprintf("ADULen, cut at %d", i))
		check(splitterFrames(t, split(stream, i)), fmt.Sprintf("Splitter, cut at %d", i))
		for j := i; j <= len(stream); j += 3 {
			check(splitterFrames(t, split(stream, i, j)), fmt.Sprintf("Splitter, cuts at %d, %d", i, j))
		}
	}
	// One byte at a time.
	one := make([][]byte, len(stream))
	for i := range stream {
		one[i] = stream[i : i+1]
	}
	check(reassemble(t, one), "ADULen, bytewise")
	check(splitterFrames(t, one), "Splitter, bytewise")
}

// splitterFrames feeds chunks to a Splitter, alternating Feed and Space/Commit, and
// collects the ADUs it returns.
func splitterFrames(t *testing.T, chunks [][]byte) [][]byte {
	t.Helper()
	var s dpi.Splitter
	var out [][]byte
	for k, c := range chunks {
		for len(c) > 0 {
			var n int
			if k%2 == 0 {
				n = s.Feed(c)
			} else {
				n = copy(s.Space(), c)
				s.Commit(n)
			}
			if n == 0 {
				t.Fatal("splitter took nothing although drained")
			}
			c = c[n:]
			for {
				adu, ok, err := s.Next()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				out = append(out, append([]byte(nil), adu...))
			}
			if len(s.Space()) < dpi.MaxADU {
				t.Fatalf("drained splitter has %d bytes of space", len(s.Space()))
			}
		}
	}
	if s.Buffered() != 0 {
		t.Fatalf("%d bytes left over", s.Buffered())
	}
	return out
}

func TestSplitter(t *testing.T) {
	t.Run("large feed is taken in parts", func(t *testing.T) {
		frames := streamFrames()
		var stream []byte
		for range 10 {
			stream = append(stream, bytes.Join(frames, nil)...)
		}
		got := splitterFrames(t, [][]byte{stream})
		if len(got) != 10*len(frames) {
			t.Fatalf("%d frames, want %d", len(got), 10*len(frames))
		}
	})
	t.Run("framing error is sticky until reset", func(t *testing.T) {
		var s dpi.Splitter
		s.Feed(mbap(3, 0, 0, 0, 1))
		s.Feed([]byte{0, 9, 0, 0, 0, 1, 1, 3})
		if _, ok, err := s.Next(); !ok || err != nil {
			t.Fatalf("first frame: %v, %v", ok, err)
		}
		for range 2 {
			_, ok, err := s.Next()
			var fe *dpi.FrameError
			if ok || !errors.As(err, &fe) || fe.Class != dpi.InvalidLength {
				t.Fatalf("broken length: %v, %v", ok, err)
			}
		}
		s.Reset()
		if s.Buffered() != 0 {
			t.Fatal("reset kept bytes")
		}
		s.Feed(mbap(17))
		if adu, ok, err := s.Next(); !ok || err != nil || !bytes.Equal(adu, mbap(17)) {
			t.Fatalf("after reset: % x, %v, %v", adu, ok, err)
		}
	})
	t.Run("partial frame stays buffered", func(t *testing.T) {
		var s dpi.Splitter
		f := mbap(3, 0, 0, 0, 1)
		s.Feed(f[:9])
		if _, ok, err := s.Next(); ok || err != nil {
			t.Fatalf("partial frame: %v, %v", ok, err)
		}
		if s.Buffered() != 9 {
			t.Fatalf("buffered %d", s.Buffered())
		}
	})
	t.Run("commit beyond space panics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		var s dpi.Splitter
		s.Commit(len(s.Space()) + 1)
	})
	t.Run("no allocation", func(t *testing.T) {
		stream := bytes.Join(streamFrames(), nil)
		s := new(dpi.Splitter)
		allocs := testing.AllocsPerRun(20, func() {
			p := stream
			for len(p) > 0 {
				n := s.Feed(p[:min(len(p), 100)])
				p = p[n:]
				for {
					adu, ok, _ := s.Next()
					if !ok {
						break
					}
					dpi.Parse(adu, dpi.Request)
				}
			}
		})
		if allocs != 0 {
			t.Fatalf("%.1f allocations per stream", allocs)
		}
	})
}

// captureFiles returns the recorded ADUs in testdata/captures: each file is one ADU in
// hex, named <client>-<server>-<seq>-<what>-<req|resp>.hex.
func captureFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", "captures", "*.hex"))
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]byte{}
	for _, name := range names {
		text, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		adu, err := hex.DecodeString(strings.TrimSpace(string(text)))
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		out[name] = adu
	}
	return out
}

func captureDir(name string) dpi.Direction {
	if strings.HasSuffix(name, "-resp.hex") {
		return dpi.Response
	}
	return dpi.Request
}

// TestCapturesParseClean proves the parser accepts what real clients and servers put on
// the wire, exceptions included, without a single anomaly.
func TestCapturesParseClean(t *testing.T) {
	files := captureFiles(t)
	if len(files) < 20 {
		t.Fatalf("only %d captures in testdata/captures; regenerate with go test ./dpi/ -run TestCaptureSeeds -update", len(files))
	}
	for name, adu := range files {
		f, c, reason := dpi.ParseReason(adu, captureDir(name))
		if c != "" {
			t.Errorf("%s: %q (%s)", name, c, reason)
		}
		if n, err := dpi.ADULen(adu); n != len(adu) || err != nil {
			t.Errorf("%s: ADULen = %d, %v for %d bytes", name, n, err, len(adu))
		}
		if want := strings.Contains(name, "-exc"); f.Exception != want {
			t.Errorf("%s: exception %v", name, f.Exception)
		}
	}
}
